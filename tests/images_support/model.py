"""The tiny Qwen-Image pipeline, built once per test process into a home laid
out like the hub cache (``hub/models--qwenhome--tiny-qwen-image-demo/...``)."""

from __future__ import annotations

import atexit
import functools
import shutil
import struct
import tempfile
import zlib
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


def png_bomb(side: int = 8192) -> bytes:
    """A valid RGB PNG of side x side black pixels: a few hundred KB that
    decode to side*side*3 bytes. Built row by row, never whole in memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\0" * (1 + side * 3)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
