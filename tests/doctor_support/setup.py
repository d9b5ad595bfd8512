"""Settings and DoctorOptions for tests: a clean environment in a temporary
home, resolvers and files pointing at local servers only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from qwenhome.config import Settings, load_settings
from qwenhome.doctor import DoctorOptions, DoctorTimeouts
from qwenhome.doctor.dnscheck import nameserver_resolver


def settings_for(tmp: Path, sources: Sequence[str] = (), env: Mapping[str, str] | None = None) -> Settings:
    """Settings with HOME and QWEN_HOME under ``tmp`` and only ``env`` besides."""
    base = {"HOME": str(tmp / "user"), "QWEN_HOME": str(tmp / "home")}
    base.update(env or {})
    return load_settings(base, sources=list(sources))


def options_for(tmp: Path, dns: Sequence[str] = (), system_dns: Sequence[str] | None = None,
                **overrides: Any) -> DoctorOptions:
    """Options that never leave 127.0.0.1: direct resolvers ``dns``, a system
    resolver asking ``system_dns`` (default: the same), no WSL, no other caches,
    fast time-outs unless given."""
    resolv = tmp / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")
    proc = tmp / "proc_version"
    if not proc.exists():
        proc.write_text("Linux version 6.1.0 (gcc) #1 SMP\n")
    opts = DoctorOptions(
        resolvers=tuple(dns),
        system_resolver=nameserver_resolver(list(system_dns if system_dns is not None else dns)),
        proc_version=proc,
        resolv_conf=resolv,
        wsl_conf=tmp / "wsl.conf",
        hf_cache_dirs=(),
        modelscope_cache_dirs=(),
        timeouts=DoctorTimeouts(dns=1.0, connect=1.0, read=1.0, total=3.0),
    )
    return replace(opts, **overrides)
