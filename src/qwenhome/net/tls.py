"""The one place TLS client contexts are made.

Every verifying connection (the client, the event loop, the reachability
probe, the doctor) uses :func:`ssl_context`: the system's certificates, or
the CA bundle the settings name (see :func:`qwenhome.config.ca_bundle`)."""

from __future__ import annotations

import os
import ssl

from ..errors import ConfigError


def ssl_context(ca: tuple[str, str] | None = None) -> ssl.SSLContext:
    """A verifying client context (host name checked, the default protocols).

    ``ca`` is ``(path, where it was named)``: that bundle is trusted instead of
    the system's; a folder is taken as a folder of hashed certificates, as
    requests does. A bundle that cannot be loaded is a configuration error
    naming the variable, not a network failure to retry."""
    if ca is None:
        return ssl.create_default_context()
    path, named_by = ca
    try:
        if os.path.isdir(path):
            return ssl.create_default_context(capath=path)
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ConfigError(
            f"cannot load the CA bundle {path} (from {named_by}): {reason}",
            code="ca-bundle-invalid",
            hint=f"point {named_by} at a PEM file of trusted certificates, or unset it to trust the system's",
            path=path,
        ) from exc


def unverified_context() -> ssl.SSLContext:
    """A context that accepts any certificate: only to look at a certificate
    that failed verification (the doctor names its issuer), never to send a
    request."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
