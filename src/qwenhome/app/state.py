"""What the running API holds: settings, what it serves, pulls.

The chat engine runs in a worker process (:class:`.serving.ChatSlot`), or
behind vLLM (a proxy engine); image generation is an extension with its own
worker. Nothing here loads a model in this process: the API only routes,
queues and streams, so ``/health`` and the page answer at once whatever the
engines compute.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request

from ..config import Settings
from ..errors import QwenhomeError
from .engine import ProxyEngine
from .errors import ApiError
from .guard import DEFAULT_BODY_LIMIT, AllowList
from .pulls import PullManager
from .scheduler import Scheduler
from .serving import DEFAULT_READY_WAIT, ChatSlot, Served, overall
from .workers.process import FAILED, LOADING, STOPPED, WorkerOptions


@dataclass(frozen=True)
class Extension:
    """An optional part of the system (e.g. image generation): its API routes,
    and a script the page loads to add its panel. ``router`` is a FastAPI
    ``APIRouter``; ``static_dir`` is served at ``/ext/<name>/``. ``engine`` is
    what it serves (a :class:`.serving.Served`), counted in ``/health`` and
    switched through ``/api/served``."""

    name: str
    router: Any
    title: str = ""
    static_dir: Path | None = None
    script: str | None = None  # file name inside static_dir
    body_limits: tuple[tuple[str, int], ...] = ()  # (path, bytes) for routes that take more than JSON
    engine: Any = None


class AppState:
    def __init__(
        self,
        settings: Settings,
        model_id: str,
        *,
        snapshot: Path | None = None,
        proxy: ProxyEngine | None = None,
        extensions: tuple[Extension, ...] = (),
        max_queue: int = 32,
        allow: AllowList | None = None,
        max_body: int = DEFAULT_BODY_LIMIT,
        ready_wait: float = DEFAULT_READY_WAIT,
        workers: WorkerOptions | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        """``snapshot``: the chat model's folder, served by the transformers
        engine in a worker; ``proxy``: or forwarded to vLLM; neither: no chat.
        ``ready_wait``: how long a request waits for an engine that loads or
        restarts before it gets a 503 with Retry-After."""
        self.settings = settings
        self._model_id = model_id
        self.snapshot = snapshot
        self.proxy = proxy
        self.extensions = extensions
        self.max_queue = max_queue
        self.allow = allow or AllowList()  # Host/Origin names the server answers to
        self.max_body = max_body  # largest JSON request body, in bytes
        self.ready_wait = ready_wait
        self.workers = workers or WorkerOptions()
        self.say = say
        self.chat: ChatSlot | None = None
        self.http: Any = None  # httpx.AsyncClient for the proxy engine, made on first use
        self.started = int(time.time())
        self.pulls = PullManager(settings)
        self._switch_lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's, once started on it

    # -- what is served ------------------------------------------------------------
    def start(self) -> None:
        """Start the chat worker (it loads in its own process). Idempotent.
        Called on the server's event loop, the loop reads the worker's messages."""
        with contextlib.suppress(RuntimeError):  # no loop runs here
            self.loop = asyncio.get_running_loop()
        if self.snapshot is not None and self.chat is None:
            self.chat = self._chat_slot(self._model_id, self.snapshot)
            self.chat.start()

    def _chat_slot(self, model: str, snapshot: Path) -> ChatSlot:
        return ChatSlot(model, snapshot, self.workers, max_queue=self.max_queue, ready_wait=self.ready_wait,
                        say=self.say, loop=self.loop)

    @property
    def model_id(self) -> str:
        """The chat model served (as given at start when none runs)."""
        if self.chat is not None:
            return self.chat.model
        if self.proxy is not None:
            return self.proxy.model_id
        return self._model_id

    @property
    def scheduler(self) -> Scheduler | None:
        return self.chat.scheduler if self.chat is not None else None

    def engines(self) -> dict[str, Any]:
        """Kind -> the engine of that kind, serving a model or not (an image service without one)."""
        out: dict[str, Any] = {}
        if self.chat is not None:
            out["chat"] = self.chat
        for ext in self.extensions:
            if ext.engine is not None:
                out[ext.engine.kind] = ext.engine
        return out

    def served(self) -> dict[str, Served]:
        """Kind -> the engine serving a model of it (chat in a worker, image, ...); vLLM is not listed."""
        return {kind: engine for kind, engine in self.engines().items() if engine.state != "none"}

    @property
    def status(self) -> str:
        """``ready``, ``loading``, ``restarting`` or ``error`` (see :func:`.serving.overall`)."""
        return overall(s.state for s in self.served().values())

    def wait_settled(self, timeout: float | None = None) -> bool:
        """Block until no served engine is loading (for the server's start)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for engine in self.served().values():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not engine.wait_settled(left):
                return False
        return True

    def load_errors(self) -> list[QwenhomeError]:
        return [s.unavailable() for s in self.served().values() if s.state == FAILED]

    async def ready_chat(self) -> ChatSlot:
        """The chat slot once ready, waiting up to ``ready_wait``; else a 503 that says why."""
        slot = self.chat
        if slot is None:
            raise ApiError(503, "no chat model is served", code="engine-unavailable",
                           hint='serve one: POST /api/served {"chat": "Org/Name"}, or the page\'s Models panel')
        if not await slot.until_ready(self.ready_wait):
            raise slot.unavailable()
        return slot

    def switch_chat(self, model: str, snapshot: Path) -> ChatSlot:
        """Serve ``model`` instead: its worker starts loading now, the old one
        is stopped (what it was doing ends with ``model-switched``). Blocks
        until the old worker is gone."""
        if self.proxy is not None:
            raise ApiError(409, "vLLM serves the model it was launched with", code="switch-unsupported",
                           hint=f"launch again with --model {model}")
        with self._switch_lock:
            old = self.chat
            if old is not None and old.model == model and old.snapshot == snapshot \
                    and old.state not in (FAILED, STOPPED):
                return old
            new = self._chat_slot(model, snapshot)
            new.start()
            self.chat = new
        if old is not None:
            old.close(ApiError(409, f"the served chat model changed from {old.model} to {model}",
                               code="model-switched", hint=f"send the request again with model {model!r}"))
        return new

    def close(self) -> None:
        if self.chat is not None:
            self.chat.close()
        self.pulls.cancel_all()


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.qwenhome
    return state


__all__ = ["LOADING", "AppState", "Extension", "get_state"]
