"""The tiny Qwen-Image pipeline, built once per test process into a home laid
out like the hub cache (``hub/models--qwenhome--tiny-qwen-image-demo/...``)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from qwenhome.images.tiny import TINY_REPO_ID, build_tiny_qwenimage

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@functools.lru_cache(maxsize=1)
def tiny_snapshot() -> Path:
    """Snapshot folder of the tiny model (built once; removed at exit)."""
    root = Path(tempfile.mkdtemp(prefix="qwenhome-tiny-image-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    repo = root / "hub" / ("models--" + TINY_REPO_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    build_tiny_qwenimage(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT, encoding="utf-8")
    return snapshot


def new_home(base: Path) -> Path:
    """A fresh home whose hub holds the tiny model (hard links: no copy of the bytes)."""
    src = tiny_snapshot().parents[3]
    home = base / "home"
    shutil.copytree(src / "hub", home / "hub", copy_function=_link)
    return home


def _link(src: str, dst: str) -> None:
    try:
        Path(dst).hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)


def snapshot_in(home: Path) -> Path:
    return home / "hub" / ("models--" + TINY_REPO_ID.replace("/", "--")) / "snapshots" / COMMIT
