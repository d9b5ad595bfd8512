"""Proxy variables as a pull sees them, taken from ``settings.env`` only.

The rule is the HTTP client's (``qwenhome.hub.http``): lower case first, then
upper case, ``ALL_PROXY`` as the fallback, ``NO_PROXY`` matched by
``urllib.request.proxy_bypass_environment``.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

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


def _env_get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name) or env.get(name.upper())
    if not value and name != "no_proxy":
        value = env.get("all_proxy") or env.get("ALL_PROXY")
    return value or None


def parse_proxy(url: str, env: Mapping[str, str]) -> Proxy:
    full = url if "://" in url else "http://" + url
    parts = urlsplit(full)
    auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username else None
    variables = tuple(v for v in PROXY_VARS if env.get(v) == url)
    return Proxy(url, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80), auth, variables)


def proxy_for(env: Mapping[str, str], scheme: str, host: str) -> Proxy | None:
    """The proxy a request to ``scheme://host`` goes through, or None."""
    url = _env_get(env, f"{scheme}_proxy")
    if not url:
        return None
    no_proxy = _env_get(env, "no_proxy")
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if no_proxy and bypass(host, {"no": no_proxy}):
        return None
    return parse_proxy(url, env)


def bypassed(env: Mapping[str, str], scheme: str, host: str) -> bool:
    """True when a proxy is set for ``scheme`` but NO_PROXY exempts ``host``."""
    return _env_get(env, f"{scheme}_proxy") is not None and proxy_for(env, scheme, host) is None


def no_proxy_value(env: Mapping[str, str]) -> str:
    return _env_get(env, "no_proxy") or ""
