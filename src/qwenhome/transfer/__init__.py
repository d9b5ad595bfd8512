"""Ranged, parallel, resumable, verified file transfer.

The names below load the engine on first use: a pull imports the light
modules (``partmap``, ``retry``, ``work``, ``preconnect``) at its start and
the engine while its listing is asked (see :mod:`qwenhome.pull`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Cancelled, EngineConfig, FileJob, TransferEngine, Tuning
    from .work import Candidate

__all__ = ["Cancelled", "Candidate", "EngineConfig", "FileJob", "TransferEngine", "Tuning"]


def __getattr__(name: str) -> Any:
    if name == "Candidate":
        from .work import Candidate

        return Candidate
    if name in __all__:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
