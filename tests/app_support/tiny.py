"""The tiny demo model, built once per test process and shared."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from pathlib import Path

from qwenhome.demo import DEMO_REPO, build_tiny_qwen2

_lock = threading.Lock()
_built: Path | None = None
_built_image: Path | None = None


def _scratch(prefix: str) -> Path:
    """A temporary folder removed when the test process exits."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, root, True)
    return root


def tiny_model_dir() -> Path:
    """A folder holding the tiny model's repository files (built on first use)."""
    global _built
    with _lock:
        if _built is None:
            _built = build_tiny_qwen2(_scratch("qwenhome-tiny-") / DEMO_REPO)
        return _built


def tiny_image_model_dir() -> Path | None:
    """The demo's tiny image model (built on first use), or None without the images extra."""
    global _built_image
    from qwenhome.images.app import available

    if not available():
        return None
    with _lock:
        if _built_image is None:
            from qwenhome.images.tiny import TINY_REPO_ID, build_tiny_qwenimage

            _built_image = build_tiny_qwenimage(_scratch("qwenhome-tiny-image-") / TINY_REPO_ID)
        return _built_image


def seed_demo_repos(home: Path) -> Path:
    """Put the built models where ``--demo`` looks for them, so the demo flow
    skips building (it still serves them from a mirror and pulls them)."""
    repos = home / "qwenhome" / "demo-repos"
    dest = repos / DEMO_REPO
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tiny_model_dir(), dest)
    image = tiny_image_model_dir()
    if image is not None:
        from qwenhome.images.tiny import TINY_REPO_ID

        shutil.copytree(image, repos / TINY_REPO_ID)
    return dest
