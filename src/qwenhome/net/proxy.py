"""Which proxy a request goes through, from an environment mapping: lower case
first, then upper case, ``ALL_PROXY`` as the fallback, ``NO_PROXY`` matched by
the standard library's rule. The client, the reachability probe and the
doctor share it, so the doctor diagnoses exactly what a pull does."""

from __future__ import annotations

from collections.abc import Mapping

from .url import Origin


def env_proxy(env: Mapping[str, str], name: str) -> str | None:
    """``http_proxy``, ``https_proxy`` or ``no_proxy`` as the environment sets it."""
    value = env.get(name) or env.get(name.upper())
    if not value and name != "no_proxy":
        value = env.get("all_proxy") or env.get("ALL_PROXY")
    return value or None


def proxy_url_for(env: Mapping[str, str], scheme: str, host: str) -> str | None:
    """The proxy URL for ``scheme://host``, or None (none set, or NO_PROXY exempts it)."""
    url = env_proxy(env, f"{scheme}_proxy")
    if not url:
        return None
    no_proxy = env_proxy(env, "no_proxy")
    if no_proxy and bypasses(host, no_proxy):
        return None
    return url


def proxy_origin(env: Mapping[str, str], origin: Origin) -> Origin | None:
    """The proxy a connection to ``origin`` is made through, or None (direct).
    A proxy given without a scheme is an HTTP proxy."""
    url = proxy_url_for(env, origin.scheme, origin.host)
    if not url:
        return None
    return Origin.of(url if "://" in url else "http://" + url)


def bypasses(host: str, no_proxy: str) -> bool:
    """The standard library's NO_PROXY rule (imported here only: urllib.request
    costs a fifth of the start-up of a pull, which rarely goes through a proxy)."""
    import urllib.request

    bypass = getattr(urllib.request, "proxy_bypass_environment")  # noqa: B009 (not in typeshed)
    return bool(bypass(host, {"no": no_proxy}))
