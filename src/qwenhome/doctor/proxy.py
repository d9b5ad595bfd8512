"""Proxy variables as a pull sees them, taken from ``settings.env`` only.

The rule is the HTTP client's own (``qwenhome.net.proxy``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ..net.proxy import env_proxy, proxy_url_for

PROXY_VARS = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")
NO_PROXY_VARS = ("no_proxy", "NO_PROXY")


@dataclass(frozen=True)
class Proxy:
    url: str
    host: str
    port: int
    auth: tuple[str, str] | None
    variables: tuple[str, ...]  # which variables hold this value, for the fix text

    @property
    def display(self) -> str:
        """The URL without credentials."""
        return f"http://{self.host}:{self.port}"


def parse_proxy(url: str, env: Mapping[str, str]) -> Proxy:
    full = url if "://" in url else "http://" + url
    parts = urlsplit(full)
    auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username else None
    variables = tuple(v for v in PROXY_VARS if env.get(v) == url)
    return Proxy(url, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80), auth, variables)


def proxy_for(env: Mapping[str, str], scheme: str, host: str) -> Proxy | None:
    """The proxy a request to ``scheme://host`` goes through, or None."""
    url = proxy_url_for(env, scheme, host)
    return parse_proxy(url, env) if url else None


def bypassed(env: Mapping[str, str], scheme: str, host: str) -> bool:
    """True when a proxy is set for ``scheme`` but NO_PROXY exempts ``host``."""
    return env_proxy(env, f"{scheme}_proxy") is not None and proxy_for(env, scheme, host) is None


def no_proxy_value(env: Mapping[str, str]) -> str:
    return env_proxy(env, "no_proxy") or ""
