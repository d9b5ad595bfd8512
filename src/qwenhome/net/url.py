"""URLs as the transport sees them: the origin a request goes to, the token
rule that every sender asks, and the request target."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ProtocolError

REDIRECT_CODES = (301, 302, 303, 307, 308)


def default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


@dataclass(frozen=True)
class Origin:
    """Scheme, host (lower case) and port: what a connection is made to, and
    what a token is bound to."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProtocolError(f"unsupported URL {url!r}", code="bad-url")
        try:
            port = parts.port or default_port(parts.scheme)
        except ValueError as exc:  # a port out of range or not a number
            raise ProtocolError(f"unsupported URL {url!r}", code="bad-url") from exc
        return cls(parts.scheme, parts.hostname.lower(), port)

    @property
    def authority(self) -> str:
        """``host[:port]`` as a Host header names it: the port only when it is
        not the scheme's own, an IPv6 address in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default_port(self.scheme) else f"{host}:{self.port}"


def token_for(token: str | None, given_for: str, url: str) -> str | None:
    """``token`` if it may go with a request to ``url``, having been given for
    the URL ``given_for`` (a source's URL); else None.

    The one rule for credentials, asked by every place that attaches one: a
    token goes only to the origin it was given for, the same scheme, host and
    port. So never to another port of the same host (a CDN beside the API),
    never over plain HTTP when it was given for HTTPS, never to another host,
    whatever a redirect, a listing's ``Link`` or a signed URL names."""
    if not token:
        return None
    try:
        return token if Origin.of(url) == Origin.of(given_for) else None
    except ProtocolError:
        return None


def request_target(url: str) -> str:
    """The origin-form target of ``url``: its path (``/`` when empty) and query."""
    parts = urlsplit(url)
    target = parts.path or "/"
    return f"{target}?{parts.query}" if parts.query else target


def host_of(url: str) -> str:
    """The host name of ``url`` (as errors name a server), or ``url`` itself."""
    return urlsplit(url).hostname or url
