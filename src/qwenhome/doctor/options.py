"""Everything the doctor takes from its world, injectable for tests.

Defaults describe a real machine; tests point resolvers, files, clocks and
cache locations at local servers and temporary folders.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .dnscheck import SystemResolver

DEFAULT_REPO = "Qwen/Qwen2.5-0.5B-Instruct"
# Hosts hf_xet talks to for huggingface.co; HF_ENDPOINT does not move them.
XET_HOSTS = ("cas-server.xethub.hf.co", "cas-bridge.xethub.hf.co", "transfer.xethub.hf.co")
HF_HOSTS = ("huggingface.co", "hf.co")


@dataclass(frozen=True)
class DoctorTimeouts:
    """Per-step bounds, and a deadline for the whole run.

    Steps of one host run in sequence; each is cut to what is left of
    ``total``, so a run where everything hangs ends at about ``total``.
    """

    dns: float = 1.5
    connect: float = 1.5
    read: float = 2.0
    total: float = 4.0


@dataclass(frozen=True)
class DoctorOptions:
    # Resolvers queried directly (dnspython) when the system resolver fails,
    # as "ip" or "ip:port", to tell a broken resolver from a missing name.
    resolvers: tuple[str, ...] = ("1.1.1.1", "8.8.8.8")
    # None: the system's getaddrinfo.
    system_resolver: SystemResolver | None = None
    proc_version: Path = Path("/proc/version")
    resolv_conf: Path = Path("/etc/resolv.conf")
    wsl_conf: Path = Path("/etc/wsl.conf")
    mounts: Path = Path("/proc/mounts")
    # Port used to probe the nameservers listed in resolv.conf (53 on real systems).
    nameserver_port: int = 53
    clock: Callable[[], float] = time.time
    timeouts: DoctorTimeouts = DoctorTimeouts()
    # Extra CA bundle to trust (else SSL_CERT_FILE from the settings, else the system's).
    ca_file: Path | None = None
    # Other caches to look for models in; None derives them from settings.env.
    hf_cache_dirs: tuple[Path, ...] | None = None
    modelscope_cache_dirs: tuple[Path, ...] | None = None
    xet_hosts: tuple[str, ...] = XET_HOSTS
    # |local clock - server Date| beyond these: warn, fail (signed CDN URLs break at ~15 min).
    skew_warn_seconds: float = 120.0
    skew_fail_seconds: float = 900.0
    # Free space below this warns when the size of what would be pulled is unknown.
    min_free_bytes: int = 1 << 30


class Deadline:
    """Shared end time of a run; steps ask it for their bounded time-out."""

    def __init__(self, total: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.end = clock() + total

    def remaining(self) -> float:
        return max(0.0, self.end - self._clock())

    def bound(self, step: float) -> float:
        return min(step, self.remaining())

    def until_end(self, grace: float) -> float:
        """Time left until the deadline plus ``grace``: how long to wait for a result."""
        return max(0.0, self.end + grace - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0
