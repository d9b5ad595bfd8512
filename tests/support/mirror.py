"""A running mirror with fault injection, as tests use it."""

from __future__ import annotations

from dataclasses import dataclass

from qwenhome.mirror import Backend, MirrorServer

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
