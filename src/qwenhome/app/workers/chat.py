"""Chat in a worker process: the worker's handler around the transformers
engine, and the API's :class:`RemoteChatEngine` that stands for it.

The API keeps the scheduler (one generation at a time, in arrival order, a
bounded queue, cancel on disconnect); only ``generate`` and token counting
cross to the worker. Text pieces come back as they are made.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import QwenhomeError
from ..engine import Completion, Message, SamplingParams, TextSink, Usage
from ..errors import status_for
from .process import WorkerProcess, error_from
from .protocol import Message as Wire

DEFAULT_CONTEXT = 4096
POLL = 0.05  # seconds between looks at the request's cancel flag while it runs


class ChatHandler:
    """Runs in the worker: the transformers engine over one snapshot."""

    quick_ops = frozenset({"count"})

    def __init__(self, model: str, snapshot: str, options: dict[str, Any]) -> None:
        from ..transformers_engine import TransformersEngine, quiet_progress_bars

        quiet_progress_bars()  # its loading bars would fill the server's log
        self.engine = TransformersEngine(Path(snapshot), model)
        self._info = self.engine.info()

    def info(self) -> dict[str, Any]:
        return self._info

    def handle(self, msg: Wire, emit: Any, cancel: threading.Event) -> Wire:
        try:
            if msg["op"] == "count":
                return {"end": "done", "tokens": self.engine.count_prompt_tokens(msg["messages"])}
            completion = self.engine.generate(msg["messages"], msg["params"], lambda text: emit({"text": text}), cancel)
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

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        call = self.worker.open("count", messages=list(messages))
        while (msg := call.next()) is not None and "end" not in msg:
            pass
        assert msg is not None
        return int(self._finish(msg)["tokens"])

    def generate(
        self, messages: Sequence[Message], params: SamplingParams, sink: TextSink, cancel: threading.Event
    ) -> Completion:
        if not self.worker.wait_ready(self.ready_wait):
            raise self.worker.unavailable()
        call = self.worker.open("generate", messages=list(messages), params=params)
        while True:
            if cancel.is_set():
                call.cancel()  # once; the worker stops at its next token
            msg = call.next(POLL)
            if msg is None:
                continue
            if "text" in msg:
                sink(msg["text"])
            if "end" in msg:
                end = self._finish(msg)
                prompt, generated = end["usage"]
                return Completion(end["finish_reason"], Usage(prompt, generated))
