"""Chat in a worker process: the worker's handler around the transformers
engine, and the API's :class:`RemoteChatEngine` that stands for it.

The API keeps the scheduler (one generation at a time, in arrival order, a
bounded queue, cancel on disconnect); only ``generate`` crosses to the
worker, in one message: the worker counts the prompt's tokens and either
refuses it (``context-length-exceeded``, ``invalid-messages``) or answers
``prompt_tokens`` and generates at once. Text pieces come back as they are
made, handed from the thread that reads the socket straight to the event
loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

from ...errors import QwenhomeError
from ..engine import Completion, Message, SamplingParams, Started, Usage
from ..errors import status_for
from .process import WorkerProcess, error_from
from .protocol import Message as Wire

DEFAULT_CONTEXT = 4096


class ChatHandler:
    """Runs in the worker: the transformers engine over one snapshot."""

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

    ``generate`` yields on the event loop as the text streams back; a worker
    that is loading or restarting is waited for up to ``ready_wait`` seconds,
    and a crash ends the generation with ``engine-crashed``."""

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

    async def generate(self, messages: Sequence[Message], params: SamplingParams
                       ) -> AsyncGenerator[Started | str | Completion, None]:
        if not await self.worker.until_ready(self.ready_wait):
            raise self.worker.unavailable()
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        events: asyncio.Queue[Wire] = asyncio.Queue()

        def deliver(msg: Wire) -> None:  # read on this loop (see WorkerProcess), or on a reader thread
            if threading.get_ident() == loop_thread:
                events.put_nowait(msg)
                return
            try:
                loop.call_soon_threadsafe(events.put_nowait, msg)
            except RuntimeError:  # the loop is closed: nobody waits for this answer
                call.cancel()

        call = self.worker.open("generate", deliver, messages=list(messages), params=params)
        try:
            while True:
                msg = await events.get()
                if "end" in msg:
                    end = self._finish(msg)
                    prompt, generated = end["usage"]
                    yield Completion(end["finish_reason"], Usage(prompt, generated))
                    return
                if "text" in msg:
                    yield msg["text"]
                elif "prompt_tokens" in msg:
                    yield Started(int(msg["prompt_tokens"]))
        finally:
            call.cancel()  # a no-op once it ended; else the worker stops at its next token
