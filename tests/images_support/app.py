"""A small app around the image router, as the real app mounts it:
``/health``, the router, and a page that loads the panel's script.

Run as ``python -m images_support.app HOME SNAPSHOT PORT`` (from tests/)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse

from qwenhome.config import load_settings
from qwenhome.images import ImageService
from qwenhome.images.api import make_router

STATIC = Path(__file__).resolve().parents[2] / "src" / "qwenhome" / "app" / "static"
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>qwenhome images test page</title>
<link rel="stylesheet" href="/static/images.css"></head>
<body><main><h1>qwenhome</h1><section data-qwenhome-panel="images"></section></main>
<script src="/static/images.js"></script></body></html>
"""


def create_app(home: Path, snapshot: Path) -> FastAPI:
    settings = load_settings({"QWEN_HOME": str(home)})
    service = ImageService(settings, snapshot, model="qwenhome/tiny-qwen-image-demo")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        service.stop()

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.get("/static/{name}")
    async def static(name: str) -> FileResponse:
        assert name in ("images.js", "images.css")
        return FileResponse(STATIC / name)

    app.include_router(make_router(service))
    return app


if __name__ == "__main__":
    import uvicorn

    home, snapshot, port = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    uvicorn.run(create_app(home, snapshot), host="127.0.0.1", port=port, log_level="warning")
