"""A running mirror with fault injection, as tests use it; pull-through mirrors too."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from qwenhome.config import Settings, load_settings
from qwenhome.mirror import Backend, MirrorServer, PullThroughBackend, XetOptions
from qwenhome.transfer import EngineConfig
from qwenhome.transfer.retry import Backoff

from .faults import Faults


@dataclass
class Mirror:
    server: MirrorServer
    faults: Faults

    @property
    def url(self) -> str:
        """The endpoint (``HF_ENDPOINT``)."""
        return self.server.url

    def stop(self) -> None:
        self.faults.release()
        self.server.stop()

    def __enter__(self) -> Mirror:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_mirror(backend: Backend, *, token: str | None = None, redirect_lfs: bool = False,
                 tree_page_size: int = 1000, faults: Faults | None = None) -> Mirror:
    """Start a mirror on 127.0.0.1 (free port) whose hooks are a :class:`Faults`."""
    faults = faults or Faults()
    server = MirrorServer(backend, token=token, hooks=faults, redirect_lfs=redirect_lfs,
                          tree_page_size=tree_page_size).start()
    return Mirror(server, faults)


def pull_through_settings(home: Path, upstream: str, *, upstream_token: str | None = None,
                          connections: int = 4) -> Settings:
    """Settings for a pull-through mirror whose store is ``home/hub`` and whose
    one source is ``upstream`` (with its own token, if given)."""
    settings = load_settings({"HOME": str(home.parent)}, home=str(home), sources=[upstream],
                             connections=connections)
    return settings.with_sources([replace(s, token=upstream_token) for s in settings.sources])


# Short back-offs so that injected upstream faults resolve in test time.
FAST_ENGINE = EngineConfig(connections=4, stall_timeout=2.0, backoff=Backoff(base=0.05, cap=0.3),
                           max_retries=4)


def start_pull_through(settings: Settings, *, token: str | None = None,
                       config: EngineConfig | None = FAST_ENGINE,
                       faults: Faults | None = None, xet: XetOptions | None = None) -> tuple[Mirror, PullThroughBackend]:
    """A pull-through mirror over ``settings`` on 127.0.0.1 (free port)."""
    backend = PullThroughBackend(settings, config=config)
    faults = faults or Faults()
    server = MirrorServer(backend, token=token, hooks=faults, xet=xet).start()
    return Mirror(server, faults), backend
