"""How the complete system mounts image generation (``qwenhome.app.serve``).

    ext = extension(settings)            # None when there is nothing to mount
    # AppState(..., extensions=(ext,)) mounts ext.router and serves the panel

The image model is the first of ``model`` (if given), ``Qwen/Qwen-Image`` and the
demo's tiny model that is complete in the home; with none, the extension is
mounted without a model (``/api/served`` serves one later). No diffusers (the
``images`` extra) means no extension: the rest of the system runs as is.
Nothing is pulled here; serving never touches the network.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import QwenhomeError
from ..repo.ref import RepoRef
from ..store.cache import Store
from .tiny import TINY_REPO_ID

DEFAULT_IMAGE_MODEL = "Qwen/Qwen-Image"
# images.js and images.css live with the page's other static files.
STATIC_DIR = Path(__file__).resolve().parents[1] / "app" / "static"
SCRIPT = "images.js"


def available() -> bool:
    """True when the image engine's libraries are installed (without importing them).

    python-multipart too: FastAPI refuses to define the upload routes without it."""
    def found(module: str) -> bool:
        return importlib.util.find_spec(module) is not None

    return all(found(m) for m in ("diffusers", "torch", "PIL")) and (found("python_multipart") or found("multipart"))


def find_image_model(settings: Settings, model: str | None = None) -> tuple[str, Path] | None:
    """``(repo id, snapshot)`` of the image model to serve, or None."""
    store = Store(settings.hub_cache, settings.state_dir)
    for repo in ([model] if model else [DEFAULT_IMAGE_MODEL, TINY_REPO_ID]):
        try:
            return repo, store.snapshot_path(RepoRef.parse(repo))
        except QwenhomeError:
            continue
    return None


def extension(settings: Settings | None = None, *, model: str | None = None, workers: Any = None,
              ready_wait: float | None = None) -> Any:
    """The images :class:`qwenhome.app.state.Extension`, or None when diffusers is missing.
    ``workers``: the :class:`qwenhome.app.workers.process.WorkerOptions` of its worker."""
    if settings is None or not available():
        return None
    from ..app.state import Extension
    from .api import EDIT_BODY_LIMIT, EDIT_ROUTES, make_router
    from .service import DEFAULT_READY_WAIT, ImageService

    # No image model yet: the panel says so, and one pulled later is served without a restart.
    repo, snapshot = find_image_model(settings, model) or ("", None)
    service = ImageService(settings, snapshot, model=repo, workers=workers,
                           ready_wait=DEFAULT_READY_WAIT if ready_wait is None else ready_wait)
    return Extension(name="images", router=make_router(service), title="Images",
                     static_dir=STATIC_DIR, script=SCRIPT,
                     body_limits=tuple((route, EDIT_BODY_LIMIT) for route in EDIT_ROUTES), engine=service)
