"""Small real filesystems for tests: a tmpfs mounted over a folder (read-only
on demand, or with few inodes). Needs the right to mount (root with
CAP_SYS_ADMIN, as in the project's sandbox); tests skip, saying why, where
that is absent."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@contextlib.contextmanager
def tmpfs(where: Path, options: str = "size=64m") -> Iterator[Path]:
    """Mount a fresh tmpfs at ``where`` (made if absent) for the block; skips the test when mounting is refused."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    res = _mount("-t", "tmpfs", "-o", options, "tmpfs", str(where))
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def remount(where: Path, mode: str) -> None:
    """Remount ``where`` read-only (``ro``) or read-write (``rw``)."""
    res = _mount("-o", f"remount,{mode}", str(where))
    assert res.returncode == 0, res.stderr
