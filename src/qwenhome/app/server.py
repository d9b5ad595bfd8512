"""The FastAPI application: routes, error rendering, the web page, extensions.

    app = create_app(AppState(settings, "Org/Name", engine_factory=...))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Every error leaves as ``{"error": {"code", "message", "hint", "type"}}`` with
the CLI's code; request validation failures are 400 (``invalid-json``,
``invalid-request``), never FastAPI's bare 422. Every request first passes
:class:`.guard.RequestGuard` (Host and Origin allow-list, body size limits).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..demo.labels import demo_label
from ..errors import QwenhomeError
from . import models_api, openai_api
from .engine import LocalEngine
from .errors import ApiError, error_body, status_for
from .guard import BodyLimits, RequestGuard
from .proxy import http_client, upstream_health
from .state import AppState, get_state

STATIC_DIR = Path(__file__).parent / "static"


def _validation_error(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return ApiError(400, "the request body is not valid JSON", code="invalid-json",
                        hint="send a JSON object with Content-Type: application/json")
    parts = []
    for e in errors[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return ApiError(400, "invalid request: " + "; ".join(parts), code="invalid-request",
                    hint="see the OpenAI chat completions reference for the fields")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(QwenhomeError)
    async def on_qwenhome_error(_request: Request, exc: QwenhomeError) -> JSONResponse:
        status = status_for(exc)
        return JSONResponse(error_body(exc, status), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        err = _validation_error(exc)
        return JSONResponse(error_body(err), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        err = ApiError(exc.status_code, str(exc.detail), code=code)
        return JSONResponse(error_body(err), status_code=exc.status_code, headers=exc.headers)


def create_app(state: AppState, *, load_engine: bool = True) -> FastAPI:
    """The application over ``state``. With ``load_engine`` the engine starts
    loading in the background at startup; ``/health`` reports when it is ready."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if load_engine and state.engine is None:
            state.start_loading()
        try:
            yield
        finally:
            state.close()
            if state.http is not None:
                await state.http.aclose()

    app = FastAPI(title="qwenhome", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.qwenhome = state
    limits = BodyLimits(state.max_body, {path: size for ext in state.extensions for path, size in ext.body_limits})
    app.add_middleware(RequestGuard, allow=state.allow, limits=limits)
    _install_error_handlers(app)
    app.include_router(openai_api.router)
    app.include_router(models_api.router)

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        st = get_state(request)
        body: dict[str, Any] = {"status": st.status, "model": st.model_id, "pid": os.getpid()}
        engine = st.engine
        if engine is not None:
            body["engine"] = engine.info()
            if isinstance(engine, LocalEngine) and st.scheduler is not None:
                body["queue"] = {"waiting": st.scheduler.queued, "busy": st.scheduler.busy}
            elif not isinstance(engine, LocalEngine) and not await upstream_health(engine, http_client(st)):
                body["status"] = "engine-unavailable"
        if st.engine_error is not None:
            body["error"] = st.engine_error.to_dict()
        # 200 while the server itself is fine; readiness is in "status".
        return JSONResponse(body)

    @app.get("/api/info")
    async def info(request: Request) -> dict[str, Any]:
        st = get_state(request)
        return {
            "version": __version__,
            "home": str(st.settings.home),
            "model": st.model_id,
            **demo_label(st.model_id),  # {"demo": true, "note"} for the demo's model
            "status": st.status,
            "engine": st.engine.info() if st.engine is not None else None,
            "extensions": [
                {"name": e.name, "title": e.title or e.name,
                 "script": f"/ext/{e.name}/{e.script}" if e.script and e.static_dir else None}
                for e in st.extensions
            ],
        }

    for ext in state.extensions:
        app.include_router(ext.router)
        if ext.static_dir is not None:
            app.mount(f"/ext/{ext.name}", StaticFiles(directory=ext.static_dir), name=f"ext-{ext.name}")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    return app
