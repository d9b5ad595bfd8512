"""The TLS step: verify the certificate; when it is not trusted, fetch it
again unverified to show its issuer and subject (an intercepting proxy)."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable

from ..net.steps import wrap_tls
from ..net.tls import unverified_context
from .context import Context, StepFailed, Target
from .model import Check, failed, passed
from .x509 import issuer_and_subject

log = logging.getLogger(__name__)


# -- TLS ---------------------------------------------------------------------
def _peer_certificate(reopen: Callable[[], socket.socket], host: str) -> bytes | None:
    """Fetch the certificate again without verifying it, to show who issued it."""
    try:
        with reopen() as raw, wrap_tls(raw, unverified_context(), host) as tls:
            return tls.getpeercert(binary_form=True)
    except (OSError, ValueError, StepFailed) as exc:
        log.debug("certificate of %s not read without verification: %r", host, exc)
        return None


def tls_handshake(ctx: Context, sock: socket.socket, target: Target, check_id: str,
                  reopen: Callable[[], socket.socket]) -> tuple[ssl.SSLSocket, Check]:
    """Verify the certificate; ``reopen`` gives a fresh raw connection on the
    same route, used only to fetch the untrusted certificate for the report."""
    timeout = ctx.deadline.bound(ctx.opts.timeouts.read)
    sock.settimeout(timeout)
    try:
        tls = wrap_tls(sock, ctx.ssl_context, target.host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        der = _peer_certificate(reopen, target.host)
        issuer, subject = issuer_and_subject(der) if der else ("?", "?")
        reason = exc.verify_message or str(exc)
        clock = (" The certificate's dates do not match the local clock: check the time (`date`)."
                 if "expired" in reason or "not yet valid" in reason else "")
        raise StepFailed(failed(
            check_id, "tls-verification-failed",
            f"the certificate of {target.host} is not trusted ({reason}); subject: {subject}; "
            f"issuer: {issuer}. An issuer other than the site's public CA means a proxy or "
            f"antivirus is intercepting TLS.{clock}",
            f"if '{issuer}' is your organisation's proxy, trust its CA: "
            "`export SSL_CERT_FILE=/path/to/proxy-ca.pem` (and REQUESTS_CA_BUNDLE for other tools); "
            "otherwise use another network",
            target.host, issuer=issuer, subject=subject, reason=reason,
        )) from None
    except TimeoutError:
        sock.close()
        raise StepFailed(failed(
            check_id, "response-timeout",
            f"{target.host} accepted the TCP connection but did not complete the TLS handshake "
            f"within {timeout:.1f} s: something on the path swallows the traffic",
            "a firewall or dead proxy is in the way: try another network, or set HTTPS_PROXY to the "
            "proxy your network requires",
            target.host,
        )) from None
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError) as exc:
        sock.close()
        raise StepFailed(failed(
            check_id, "connection-dropped",
            f"{target.host} closed the connection during the TLS handshake ({exc!r}): often a "
            "firewall that blocks by server name, or a proxy that is required but not set",
            "try another network, or set HTTPS_PROXY to your network's proxy; ask the network "
            f"administrator whether {target.host} is blocked",
            target.host,
        )) from None
    except ssl.SSLError as exc:
        sock.close()
        reason = exc.reason or str(exc)
        plain = " (the server speaks plain HTTP: use http:// in the URL)" if "WRONG_VERSION" in str(reason) else ""
        raise StepFailed(failed(
            check_id, "tls-handshake-failed",
            f"TLS with {target.host} failed: {reason}{plain}",
            f"check the URL's scheme and port in {target.origin}; an old TLS-intercepting middlebox "
            "can also cause this",
            target.host, reason=str(reason),
        )) from None
    except OSError as exc:
        sock.close()
        raise StepFailed(failed(
            check_id, "connection-dropped",
            f"{target.host} dropped the connection during the TLS handshake "
            f"({exc.strerror or exc!r}): often a firewall that blocks by server name",
            "try another network or a proxy (HTTPS_PROXY); ask the network administrator whether "
            f"{target.host} is blocked",
            target.host,
        )) from None
    return tls, passed(check_id, f"TLS certificate of {target.host} verified ({tls.version()})", target.host)
