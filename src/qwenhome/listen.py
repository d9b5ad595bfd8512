"""Why a server could not listen on ``--host``/``--port``, as one error with its own code.

``launch`` and ``mirror serve`` bind what the user typed; the operating system
refuses for different reasons, and each has a different fix: a name that does
not resolve, an address that is not this machine's, a port that needs
privileges, a port in use.
"""

from __future__ import annotations

import errno
import socket

from .errors import UsageError


def bind_error(host: str, port: int, exc: BaseException) -> UsageError:
    """The :class:`UsageError` naming why binding ``host:port`` failed with ``exc``
    (an ``OSError``, the ``ValueError``/``UnicodeError`` a malformed name raises,
    or the ``OverflowError`` of a port out of range)."""
    where = f"{host}:{port}"
    if isinstance(exc, OverflowError):
        return UsageError(f"cannot listen on {where}: a port is a number from 0 to 65535", code="invalid-port",
                          hint="pass --port with a number from 1024 to 65535")
    if isinstance(exc, (socket.gaierror, UnicodeError, ValueError)):
        # gaierror: the resolver does not know the name; UnicodeError/ValueError:
        # it cannot even be encoded as one (an empty label, a NUL byte, 64+ characters).
        return UsageError(f"cannot listen on {where}: {host!r} does not resolve to an address of this machine",
                          code="host-not-found",
                          hint="give an IP address of this machine, 127.0.0.1 (this machine only) "
                               "or 0.0.0.0 (every interface)")
    reason = getattr(exc, "strerror", None) or str(exc)
    code = getattr(exc, "errno", None)
    if code == errno.EADDRINUSE:
        return UsageError(f"cannot listen on {where}: port {port} is in use", code="port-in-use",
                          hint=f"stop what uses port {port}, or pass --port with another port")
    if code == errno.EADDRNOTAVAIL:
        return UsageError(f"cannot listen on {where}: {host} is not an address of this machine ({reason})",
                          code="address-not-available",
                          hint="give an address this machine has (`ip addr`), 127.0.0.1, or 0.0.0.0 for every interface")
    if code in (errno.EACCES, errno.EPERM):
        return UsageError(f"cannot listen on {where}: permission denied", code="port-permission-denied",
                          hint="ports below 1024 need administrator rights: pass --port 1024 or above")
    if code == errno.EAFNOSUPPORT:
        return UsageError(f"cannot listen on {where}: this machine does not support that address family ({reason})",
                          code="address-not-available", hint="give an IPv4 address such as 127.0.0.1")
    return UsageError(f"cannot listen on {where}: {reason}", code="cannot-listen",
                      hint="check --host and --port")
