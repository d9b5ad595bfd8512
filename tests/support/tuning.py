"""Engine configurations with the transfer parts' numbers changed, for tests
(a user sets none of them: see ``qwenhome.transfer.Tuning``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from qwenhome.transfer import EngineConfig


def tuned(config: EngineConfig, **parts: Any) -> EngineConfig:
    """``config`` with some of its tuning's parts replaced (``splits=Splits(...)``, ``splice=False``...)."""
    return replace(config, tuning=replace(config.tuning, **parts))


def ranges(config: EngineConfig, size: int, **sizes: Any) -> EngineConfig:
    """``config`` cutting files into ranges of ``size`` (the range sizer's
    least and most both ``size``), with ``sizes`` setting more of its numbers."""
    return tuned(config, sizes=replace(config.tuning.sizes, chunk_min=size, chunk_max=size, **sizes))
