"""A small app around the image router: ``/health`` and the router, mounted
the way the real app mounts it (the router's lifespan runs the service).

Run as ``python -m tests.images_support.app HOME SNAPSHOT PORT`` (from the repository root)."""

from __future__ import annotations

import sys
from pathlib import Path

from fastapi import FastAPI

from qwenhome.config import load_settings
from qwenhome.images import ImageService
from qwenhome.images.api import make_router


def create_app(home: Path, snapshot: Path) -> FastAPI:
    settings = load_settings({"QWEN_HOME": str(home)})
    service = ImageService(settings, snapshot, model="qwenhome/tiny-qwen-image-demo")
    # The router's own lifespan starts and stops the service.
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(make_router(service))
    return app


if __name__ == "__main__":
    import uvicorn

    home, snapshot, port = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    uvicorn.run(create_app(home, snapshot), host="127.0.0.1", port=port, log_level="warning")
