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
from .errors import ApiError, error_body, headers_for, status_for
from .guard import BodyLimits, RequestGuard
from .proxy import http_client, upstream_health
from .state import AppState, get_state

STATIC_DIR = Path(__file__).parent / "static"


# What a route's body should look like, for the hint of an invalid one.
BODY_HINTS = {
    "/v1/chat/completions": "see the OpenAI chat completions reference for the fields",
    "/api/models/pull": 'send {"repo": "Org/Name"} (or "Org/Name@revision")',
    "/api/served": 'send {"chat": "Org/Name"} and/or {"image": "Org/Name"}; GET /api/served lists what can be served',
}


def _validation_error(exc: RequestValidationError, path: str) -> ApiError:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return ApiError(400, "the request body is not valid JSON", code="invalid-json",
                        hint="send a JSON object with Content-Type: application/json")
    parts = []
    for e in errors[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return ApiError(400, "invalid request: " + "; ".join(parts), code="invalid-request",
                    hint=BODY_HINTS.get(path, "GET /docs describes every route's body"))


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(QwenhomeError)
    async def on_qwenhome_error(_request: Request, exc: QwenhomeError) -> JSONResponse:
        status = status_for(exc)
        return JSONResponse(error_body(exc, status), status_code=status, headers=headers_for(exc))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = _validation_error(exc, request.url.path)
        return JSONResponse(error_body(err), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        err = ApiError(exc.status_code, str(exc.detail), code=code)
        return JSONResponse(error_body(err), status_code=exc.status_code, headers=exc.headers)


def create_app(state: AppState, *, load_engine: bool = True) -> FastAPI:
    """The application over ``state``. With ``load_engine`` the chat worker
    starts at startup; ``/health`` answers 200 once every served engine is ready."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if load_engine:
            state.start()
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
        """200 once every served engine can answer; 503 while one loads or
        restarts (with Retry-After), or failed (with the error)."""
        body = await readiness(get_state(request))
        status = body["status"]
        headers = {"Retry-After": "5"} if status in ("loading", "restarting") else None
        return JSONResponse(body, status_code=200 if status == "ready" else 503, headers=headers)

    @app.get("/api/info")
    async def info(request: Request) -> dict[str, Any]:
        st = get_state(request)
        ready = await readiness(st)
        return {
            "version": __version__,
            "home": str(st.settings.home),
            "model": st.model_id,
            **demo_label(st.model_id),  # {"demo": true, "note"} for the demo's model
            "status": ready["status"],
            "engine": ready.get("engine"),
            "engines": ready["engines"],
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

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        # Browsers ask for it whatever the page's <link rel="icon"> says; a 404 is a console error.
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml",
                            headers={"Cache-Control": "max-age=86400"})

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    return app


async def readiness(st: AppState) -> dict[str, Any]:
    """``/health``'s body: the overall status, each served engine's state."""
    engines = {kind: engine.describe() for kind, engine in st.served().items()}
    status = st.status
    body: dict[str, Any] = {"status": status, "model": st.model_id, "pid": os.getpid(), "engines": engines}
    if st.chat is not None:
        body["engine"] = st.chat.engine.info()
        body["queue"] = {"waiting": st.chat.scheduler.queued, "busy": st.chat.scheduler.busy}
    elif st.proxy is not None:
        up = await upstream_health(st.proxy, http_client(st))
        body["engine"] = st.proxy.info()
        engines["chat"] = {"kind": "chat", "model": st.proxy.model_id, "state": "ready" if up else "loading",
                           **st.proxy.info()}
        if not up and status == "ready":
            body["status"] = "loading"
    errors = st.load_errors()
    if errors:
        body["error"] = errors[0].to_dict()
    return body
