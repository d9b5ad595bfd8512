"""Chat in a worker process: the worker's handler around the transformers
engine, and the API's :class:`RemoteChatEngine` that stands for it.

The API keeps the scheduler (one generation at a time, in arrival order, a
bounded queue, cancel on disconnect); only ``generate`` crosses to the
worker, in one message: the worker counts the prompt's tokens and either
refuses it (``context-length-exceeded``, ``invalid-messages``) or answers
``prompt_tokens`` and generates at once. Text pieces come back as they are
made, handed to the request's sink on the thread that reads the socket.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import QwenhomeError
from ..engine import Completion, EventSink, Message, SamplingParams, Started, Usage
from ..errors import status_for
from .process import WorkerProcess, error_from
from .protocol import Message as Wire

log = logging.getLogger("qwenhome.app.workers.chat")

DEFAULT_CONTEXT = 4096
POLL = 0.05  # seconds between looks at the request's cancel flag while it runs


class ChatHandler:
    """Runs in the worker: the transformers engine over one snapshot."""

    quick_ops: frozenset[str] = frozenset()

    def __init__(self, model: str, snapshot: str, options: dict[str, Any]) -> None:
        from ..transformers_engine import TransformersEngine, quiet_progress_bars

        quiet_progress_bars()  # its loading bars would fill the server's log
        self.engine = TransformersEngine(Path(snapshot), model)
        self._info = self.engine.info()

    def info(self) -> dict[str, Any]:
        return self._info

    def handle(self, msg: Wire, emit: Any, cancel: threading.Event) -> Wire:
        try:
            completion = self.engine.generate(msg["messages"], msg["params"], lambda text: emit({"text": text}),
                                              cancel, started=lambda n: emit({"prompt_tokens": n}))
        except QwenhomeError as exc:
            return {"end": "error", "error": exc.to_dict(), "status": status_for(exc)}
        except Exception as exc:  # torch's own failures (e.g. NaN probabilities), reported as such
            err = QwenhomeError(f"generation failed: {exc}", code="generation-failed")
            return {"end": "error", "error": err.to_dict(), "status": 500}
        usage = completion.usage
        return {"end": "done", "finish_reason": completion.finish_reason,
                "usage": (usage.prompt_tokens, usage.completion_tokens)}


class RemoteChatEngine:
    """The API's :class:`~qwenhome.app.engine.LocalEngine`: the worker generates.

    ``generate`` blocks its thread (the scheduler's) while the text streams
    back; a worker that is loading or restarting is waited for up to
    ``ready_wait`` seconds, and a crash ends the generation with
    ``engine-crashed``."""

    def __init__(self, worker: WorkerProcess, ready_wait: float) -> None:
        self.worker = worker
        self.ready_wait = ready_wait

    @property
    def model_id(self) -> str:
        return self.worker.spec.model

    @property
    def context_length(self) -> int:
        return int(self.worker.info.get("context_length") or DEFAULT_CONTEXT)

    def info(self) -> dict[str, Any]:
        return {**self.worker.info, "pid": self.worker.pid, "state": self.worker.state}

    def _finish(self, end: Wire) -> Wire:
        if end["end"] == "error":
            raise error_from(end.get("error", {}), int(end.get("status", 500)))
        return end

    def generate(
        self, messages: Sequence[Message], params: SamplingParams, sink: EventSink, cancel: threading.Event
    ) -> Completion:
        if not self.worker.wait_ready(self.ready_wait):
            raise self.worker.unavailable()

        def progress(msg: Wire) -> None:  # on the worker's reader thread: no hop to this one per piece
            try:
                if "text" in msg:
                    sink(msg["text"])
                elif "prompt_tokens" in msg:
                    sink(Started(int(msg["prompt_tokens"])))
            except Exception:  # never the reader's end: it serves every call
                log.exception("a chat sink failed")
                cancel.set()

        call = self.worker.open("generate", progress, messages=list(messages), params=params)
        while True:
            if cancel.is_set():
                call.cancel()  # once; the worker stops at its next token
            msg = call.next(POLL)
            if msg is None:
                continue
            if "end" in msg:
                end = self._finish(msg)
                prompt, generated = end["usage"]
                return Completion(end["finish_reason"], Usage(prompt, generated))
