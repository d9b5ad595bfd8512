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


def tiny_model_dir() -> Path:
    """A folder holding the tiny model's repository files (built on first use)."""
    global _built
    with _lock:
        if _built is None:
            root = Path(tempfile.mkdtemp(prefix="qwenhome-tiny-"))
            atexit.register(shutil.rmtree, root, True)
            _built = build_tiny_qwen2(root / DEMO_REPO)
        return _built


def seed_demo_repos(home: Path) -> Path:
    """Put the built model where ``--demo`` looks for it, so the demo flow
    skips building (it still serves it from a mirror and pulls it)."""
    dest = home / "qwenhome" / "demo-repos" / DEMO_REPO
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tiny_model_dir(), dest)
    return dest
