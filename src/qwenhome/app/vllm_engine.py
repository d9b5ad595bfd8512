"""vLLM as the engine: ``vllm serve <snapshot path>`` in a child process with
the home variables, and this API proxying to it.

vLLM is given the absolute snapshot path, never a repository id, so it reads
the home and never asks the Hub (its offline mode is known to still try).
Its own tensor/pipeline parallel options (``--tensor-parallel-size``,
``--pipeline-parallel-size``, Ray for several nodes) pass through ``extra``:
that is the way past one machine.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def vllm_command(
    executable: Sequence[str],
    snapshot: Path,
    model_id: str,
    *,
    host: str = "127.0.0.1",
    port: int,
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line that starts vLLM's OpenAI server on ``snapshot``."""
    return [
        *executable,
        "serve",
        str(snapshot),
        "--host",
        host,
        "--port",
        str(port),
        "--served-model-name",
        model_id,
        *extra,
    ]


def vllm_available() -> bool:
    """vLLM importable and a CUDA GPU present (checked without importing vLLM)."""
    if importlib.util.find_spec("vllm") is None:
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@dataclass(frozen=True)
class VllmProxy:
    """The API's view of a running vLLM server: where to forward requests."""

    model_id: str
    base_url: str

    def info(self) -> dict[str, Any]:
        return {"engine": "vllm", "model": self.model_id, "upstream": self.base_url}
