"""Image generation in a worker process: the worker's handler around the
diffusers engine, and :func:`render`, the API's side of one image.

The API keeps the job queue, the validation and the result store; the worker
decides the device policy (it imports torch, the API never does), loads the
pipeline, denoises, and sends back one ``step`` message per denoising step
and the finished PNG (its parameters already embedded). A cancel reaches the
worker at once and stops it at the end of the current step.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..app.workers.process import WorkerProcess, error_from
from ..app.workers.protocol import Message
from ..errors import QwenhomeError
from .engine import GenerationCancelled, ImageEngine
from .errors import ImageEngineError, http_status
from .jobs import ImageRequest
from .policy import Policy, decide_policy, model_footprint, probe_hardware
from .results import encode_png

POLL = 0.05  # seconds between looks at the job's cancel flag while the worker denoises


class ImageHandler:
    """Runs in the worker: one Qwen-Image pipeline, loaded at start."""

    def __init__(self, model: str, snapshot: str, options: dict[str, Any]) -> None:
        started = time.perf_counter()
        path = Path(snapshot)
        forced = options.get("policy")
        self.policy = Policy(**forced) if forced else decide_policy(probe_hardware(), model_footprint(path))
        self.engine = ImageEngine(path, self.policy)
        self.engine.load()
        # What is loaded lives as long as the worker: frozen, it is never
        # scanned again by a full collection while images are made.
        gc.freeze()
        self._info = {"engine": "diffusers", "model": model, "snapshot": snapshot,
                      "policy": self.policy.to_dict(), "load_seconds": round(time.perf_counter() - started, 3)}

    def info(self) -> dict[str, Any]:
        return self._info

    def handle(self, msg: Message, emit: Callable[[Message], None], cancel: threading.Event) -> Message:
        def on_step(step: int, total: int) -> None:
            emit({"step": step, "total": total})
            if cancel.is_set():  # checked after each step: a job stops within one step
                raise GenerationCancelled()

        try:
            image = self.engine.generate(msg["request"], msg["seed"], on_step)
            png = encode_png(image, msg["meta"])
        except GenerationCancelled:
            return {"end": "cancelled"}
        except QwenhomeError as exc:
            return {"end": "error", "error": exc.to_dict(), "status": http_status(exc)}
        except Exception as exc:  # the worker must survive any one job
            err = ImageEngineError(f"generation failed: {type(exc).__name__}: {exc}")
            return {"end": "error", "error": err.to_dict(), "status": 500}
        return {"end": "done", "png": png}


def render(worker: WorkerProcess, request: ImageRequest, seed: int, meta: dict[str, Any],
           on_step: Callable[[int, int], None], cancel: threading.Event) -> bytes:
    """One image made by the worker: PNG bytes with ``meta`` embedded. Calls
    ``on_step(step, steps)`` as the worker reports them; raises
    :class:`GenerationCancelled` once ``cancel`` stopped it, and the worker's
    error (``engine-crashed`` when it died) as an exception."""
    call = worker.open("generate", request=request, seed=seed, meta=meta)
    while True:
        if cancel.is_set():
            call.cancel()  # once; the worker stops at the end of its current step
        msg = call.next(POLL)
        if msg is None:
            continue
        if "step" in msg:
            on_step(int(msg["step"]), int(msg["total"]))
        end = msg.get("end")
        if end == "done":
            png: bytes = msg["png"]
            return png
        if end == "cancelled":
            raise GenerationCancelled()
        if end is not None:
            raise error_from(msg.get("error", {}), int(msg.get("status", 500)))
