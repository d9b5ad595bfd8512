"""What the running API holds: settings, the served model, its engine, pulls.

The engine loads in a background thread so that ``/health`` and the page
answer at once (``status: loading``) and a slow load is visible, not a hang.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request

from ..config import Settings
from ..errors import QwenhomeError
from .engine import LocalEngine, ProxyEngine
from .errors import ApiError
from .guard import DEFAULT_BODY_LIMIT, AllowList
from .pulls import PullManager
from .scheduler import Scheduler

Engine = LocalEngine | ProxyEngine
EngineFactory = Callable[[], Engine]


@dataclass(frozen=True)
class Extension:
    """An optional part of the system (e.g. image generation): its API routes,
    and a script the page loads to add its panel. ``router`` is a FastAPI
    ``APIRouter``; ``static_dir`` is served at ``/ext/<name>/``."""

    name: str
    router: Any
    title: str = ""
    static_dir: Path | None = None
    script: str | None = None  # file name inside static_dir
    body_limits: tuple[tuple[str, int], ...] = ()  # (path, bytes) for routes that take more than JSON


@dataclass
class AppState:
    settings: Settings
    model_id: str
    engine_factory: EngineFactory | None = None
    extensions: tuple[Extension, ...] = ()
    max_queue: int = 32
    allow: AllowList = field(default_factory=AllowList)  # Host/Origin names the server answers to
    max_body: int = DEFAULT_BODY_LIMIT  # largest JSON request body, in bytes
    engine: Engine | None = None
    engine_error: QwenhomeError | None = None
    scheduler: Scheduler | None = None
    http: Any = None  # httpx.AsyncClient for the proxy engine, made on first use
    started: int = field(default_factory=lambda: int(time.time()))
    pulls: PullManager = field(init=False)
    _loaded: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.pulls = PullManager(self.settings)

    # -- engine lifecycle --------------------------------------------------------
    def load_engine(self) -> None:
        """Build the engine (blocking). Errors are kept for ``/health`` and requests."""
        if self.engine_factory is None:
            self._loaded.set()
            return
        try:
            engine = self.engine_factory()
            if isinstance(engine, LocalEngine):
                self.scheduler = Scheduler(engine, max_queue=self.max_queue)
            self.engine = engine
        except QwenhomeError as exc:
            self.engine_error = exc
        except Exception as exc:  # an engine's own failure, shown rather than swallowed
            self.engine_error = QwenhomeError(f"engine failed to load: {exc}", code="engine-load-failed")
        finally:
            self._loaded.set()

    def start_loading(self) -> threading.Thread:
        t = threading.Thread(target=self.load_engine, name="qwenhome-engine-load", daemon=True)
        t.start()
        return t

    def wait_loaded(self, timeout: float | None = None) -> bool:
        return self._loaded.wait(timeout)

    @property
    def status(self) -> str:
        if self.engine is not None:
            return "ready"
        if self.engine_error is not None:
            return "error"
        return "loading" if self.engine_factory is not None else "no-engine"

    def require_engine(self) -> Engine:
        if self.engine is not None:
            return self.engine
        if self.engine_error is not None:
            raise ApiError(503, self.engine_error.message, code=self.engine_error.code, hint=self.engine_error.hint)
        raise ApiError(503, f"{self.model_id} is still loading", code="engine-loading", hint="retry in a few seconds")

    def require_scheduler(self) -> Scheduler:
        if self.scheduler is None:
            raise ApiError(503, "no local engine", code="engine-unavailable")
        return self.scheduler

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()
        self.pulls.cancel_all()


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.qwenhome
    return state
