"""What the doctor reports: one :class:`Check` per verdict, and the report.

A check's ``code`` is one of the stable kebab-case codes of
:mod:`qwenhome.errors` (or a doctor-only code listed in :data:`DOCTOR_CODES`);
it is ``None`` when the check passed or was skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from ..errors import EXIT_FAILURE, EXIT_OK
from .verdict import verdict

Status = Literal["pass", "warn", "fail", "skip"]
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail", "skip")

# Codes the doctor reports, all of them. Those shared with the rest of the
# project keep errors.py's spelling; the others exist only in the doctor.
SHARED_CODES = (
    "dns-resolution-failed", "connection-refused", "connection-timeout", "response-timeout",
    "tls-verification-failed", "http-error", "not-a-hub", "connection-dropped", "ca-bundle-invalid",
)
DOCTOR_CODES = (
    "ipv6-unreachable", "clock-skew", "tls-handshake-failed", "proxy-connection-failed",
    "proxy-bypass", "wsl-resolv-conf", "wsl-home-on-windows-drive", "disk-space-low", "cache-env-mismatch",
    "models-in-other-cache", "offline-flag-set", "deprecated-hf-transfer", "fix-failed",
    "internal-error",
)


@dataclass(frozen=True)
class Check:
    """One verdict. ``fix`` is the exact action (a command or a sentence), empty on pass."""

    id: str
    status: Status
    summary: str
    code: str | None = None
    fix: str = ""
    host: str | None = None
    details: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "code": self.code,
            "summary": self.summary,
            "fix": self.fix,
        }
        if self.host is not None:
            out["host"] = self.host
        if self.details:
            out["details"] = dict(self.details)
        return out


def passed(id: str, summary: str, host: str | None = None, **details: str) -> Check:
    return Check(id, "pass", summary, host=host, details=MappingProxyType(details))


def skipped(id: str, summary: str, host: str | None = None) -> Check:
    return Check(id, "skip", summary, host=host)


def failed(id: str, code: str, summary: str, fix: str, host: str | None = None, **details: str) -> Check:
    return Check(id, "fail", summary, code, fix, host, MappingProxyType(details))


def warned(id: str, code: str, summary: str, fix: str, host: str | None = None, **details: str) -> Check:
    return Check(id, "warn", summary, code, fix, host, MappingProxyType(details))


@dataclass(frozen=True)
class FixApplied:
    """A change ``--fix`` made on disk (user-level only)."""

    id: str
    summary: str
    path: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "summary": self.summary, "path": self.path}


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]
    fixes_applied: tuple[FixApplied, ...] = ()
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings do not fail the run)."""
        return not any(c.status == "fail" for c in self.checks)

    @property
    def exit_code(self) -> int:
        """0 when ``ok``; 1 (``EXIT_FAILURE``) when any check failed."""
        return EXIT_OK if self.ok else EXIT_FAILURE

    @property
    def verdict(self) -> str:
        """One line: "ok", "No internet access: …", or the first failing cause."""
        return verdict(self.checks)

    def by_code(self, code: str) -> list[Check]:
        return [c for c in self.checks if c.code == code]

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "ok": self.ok,
            "checks": [c.to_dict() for c in self.checks],
            "fixes_applied": [f.to_dict() for f in self.fixes_applied],
        }
