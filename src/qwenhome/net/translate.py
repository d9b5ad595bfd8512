"""The one boundary where transport exceptions (socket, ssl, http.client)
become qwenhome errors, most specific first. Messages name the server as
``host[:port]``: two sources may share a host."""

from __future__ import annotations

import http.client
import socket
import ssl

from ..errors import (
    ConnectError,
    ProtocolError,
    QwenhomeError,
    ReadTimeoutError,
    TransferInterrupted,
)
from .url import Origin, host_of

TLS_HINT = "a proxy may be intercepting TLS; run `qwenhome doctor`, or set SSL_CERT_FILE to its CA"


def translate(exc: BaseException, url: str, *, connecting: bool = False) -> BaseException:
    """The qwenhome error for ``exc``, met talking to ``url``; ``connecting``:
    while the connection was being made (a time-out then is the connect's).
    qwenhome errors pass through unchanged, and so does what is no network
    failure (Ctrl+C, a bug): neither retried nor renamed."""
    host = host_of(url)
    if isinstance(exc, QwenhomeError):
        return exc
    if isinstance(exc, socket.gaierror):
        return ConnectError(f"cannot resolve {host}: {exc.strerror}", code="dns-resolution-failed", host=host)
    try:
        origin: Origin | None = Origin.of(url)
    except ProtocolError:
        origin = None
    where = origin.authority if origin is not None else host
    if connecting and isinstance(exc, TimeoutError) and origin is not None:
        return ConnectError(f"connecting to {origin.host}:{origin.port} timed out", code="connection-timeout",
                            host=origin.host)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectError(f"TLS certificate of {where} not trusted: {exc.verify_message}",
                            code="tls-verification-failed", hint=TLS_HINT, host=host)
    if isinstance(exc, ConnectionRefusedError):
        return ConnectError(f"connection to {where} refused", code="connection-refused", host=host)
    if isinstance(exc, TimeoutError):
        return ReadTimeoutError(f"{where} did not answer in time", code="response-timeout", host=host)
    if isinstance(exc, http.client.IncompleteRead | http.client.RemoteDisconnected | ConnectionResetError
                  | BrokenPipeError):
        return TransferInterrupted(f"connection to {where} dropped", host=host)
    if isinstance(exc, ssl.SSLError):
        return ConnectError(f"TLS error with {where}: {exc}", code="tls-error", host=host)
    if isinstance(exc, http.client.HTTPException):
        return TransferInterrupted(f"bad HTTP exchange with {where}: {exc!r}", host=host)
    if isinstance(exc, OSError):
        return ConnectError(f"network error with {where}: {exc.strerror or exc}", host=host)
    if isinstance(exc, ValueError):  # (UnicodeError too) a host or path no request can carry: retrying cannot help
        return ProtocolError(f"cannot send a request to {url}: {exc}", code="bad-url", host=host)
    return exc
