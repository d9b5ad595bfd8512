"""What every step of a host check shares: the target, the run's context,
and the exception that ends a chain with a Check."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from urllib.parse import urlsplit

from .. import __version__
from .dnscheck import SystemResolver
from .model import Check
from .options import Deadline, DoctorOptions

USER_AGENT = f"qwenhome-doctor/{__version__}"


class StepFailed(Exception):
    """A step ended the chain; ``check`` says why."""

    def __init__(self, check: Check) -> None:
        super().__init__(check.summary)
        self.check = check


@dataclass(frozen=True)
class Target:
    """A host a pull would touch. ``origin`` says where it came from, for fixes."""

    scheme: str
    host: str
    port: int
    origin: str

    @classmethod
    def of(cls, url: str, origin: str) -> Target:
        parts = urlsplit(url)
        scheme = parts.scheme or "https"
        port = parts.port or (443 if scheme == "https" else 80)
        return cls(scheme, (parts.hostname or "").lower(), port, origin)

    @property
    def netloc(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


@dataclass
class Response:
    status: int
    reason: str
    headers: Message
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass
class Context:
    """What every host chain shares."""

    opts: DoctorOptions
    deadline: Deadline
    resolver: SystemResolver
    system_nameservers: list[str]
    ssl_context: ssl.SSLContext
    env: Mapping[str, str]
