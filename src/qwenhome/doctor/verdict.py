"""The report's one-line verdict: "ok", "No internet access: …", or the
first failing cause in plain words.

"No internet access" is said only when there is no sign of the internet at
all: public hosts were probed, none of them connected (directly or through a
proxy tunnel), and no public resolver answered either. A resolver that
answers NXDOMAIN for a public host, or a LAN mirror that is down, is a more
precise cause, told as such.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Protocol


class Check(Protocol):
    """What the verdict reads of a :class:`qwenhome.doctor.model.Check` (which imports this module)."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def summary(self) -> str: ...
    @property
    def code(self) -> str | None: ...
    @property
    def host(self) -> str | None: ...
    @property
    def details(self) -> Mapping[str, str]: ...


# Codes that mean "nothing got through to this host".
NO_ROUTE_CODES = frozenset({
    "dns-resolution-failed", "connection-timeout", "connection-failed", "connection-refused",
})
# Steps that only pass when packets reached the host (or its tunnel).
REACHED_STEPS = frozenset({"tcp", "tunnel", "tls", "api", "resolve", "http", "clock"})
LOCAL_SUFFIXES = (".local", ".lan", ".internal", ".home.arpa", ".localdomain", ".localhost", ".test")


def is_public_host(host: str) -> bool:
    """A name or address on the internet, not this machine or a private network."""
    name = host.strip("[]").rstrip(".").lower()
    try:
        return ipaddress.ip_address(name).is_global
    except ValueError:
        pass
    if name == "localhost" or "." not in name:
        return False  # a single-label name is a LAN name
    return not name.endswith(LOCAL_SUFFIXES)


def _step(check: Check) -> str:
    return check.id.split(":", 1)[0]


def _no_internet(checks: Sequence[Check]) -> list[Check] | None:
    """The failures that show no public host is reachable, or None when some
    public host (or public resolver) answered, or none was probed."""
    public = [c for c in checks if c.host and is_public_host(c.host)]
    for c in public:
        if c.status == "pass" and _step(c) in REACHED_STEPS:
            return None
        if c.details.get("working_resolver") or c.details.get("failure") == "nxdomain":
            return None  # a resolver on the way answered: there is a network, DNS is the problem
    failures = [c for c in public if c.status == "fail" and c.code in NO_ROUTE_CODES]
    return failures or None


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def verdict(checks: Sequence[Check]) -> str:
    """One line that says what matters most in the report."""
    failures = _no_internet(checks)
    if failures is not None:
        hosts = list(dict.fromkeys(c.host for c in failures if c.host))
        shown = ", ".join(hosts[:3]) + (f" and {len(hosts) - 3} more" if len(hosts) > 3 else "")
        dns_only = all(c.code == "dns-resolution-failed" for c in failures)
        how = ("no DNS server answers for " if dns_only else "no connection gets through to ") + shown
        wsl = next((c for c in checks if c.id == "wsl-resolv-conf" and c.status == "fail"), None)
        extra = "; WSL's nameserver does not answer either (see wsl-resolv-conf)" if wsl else ""
        return (f"No internet access: {how}{extra}. Models already in the home still work: "
                "`qwenhome launch --offline`")
    first = next((c for c in checks if c.status == "fail"), None)
    if first is not None:
        return _capital(first.summary) + (f" [{first.code}]" if first.code else "")
    warnings = [c for c in checks if c.status == "warn"]
    unprobed = next((c for c in checks if c.id == "network" and c.status == "skip"), None)
    note = f" ({unprobed.summary})" if unprobed else ""
    if warnings:
        more = f" (and {len(warnings) - 1} more)" if len(warnings) > 1 else ""
        return f"ok{note}, but: {warnings[0].summary}{more}"
    return f"ok{note}"
