"""``export -o`` into a pipe or a device: written into, and it stays what it
was (the archive used to be renamed over it: over /dev/null, as root, that
left a regular file where the device was; a FIFO became a file)."""

from __future__ import annotations

import os
import select
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import RunCli
from tests.support.cli import clean_env
from tests.support.mirror import Mirror


def test_export_into_a_fifo_streams_the_archive_and_leaves_the_fifo(
        run_cli: RunCli, qwen_home: Path, mirror: Mirror, tmp_path: Path) -> None:
    assert run_cli(["pull", "Org/Small"], endpoint=mirror.url).returncode == 0
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # (so that the writer's open does not wait)
    proc = subprocess.Popen([sys.executable, "-m", "qwenhome", "export", "Org/Small", "-o", str(fifo)],
                            env=clean_env(qwen_home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    received = bytearray()
    try:
        while True:
            ready, _, _ = select.select([reader], [], [], 0.1)
            data = b""
            if ready:
                try:
                    data = os.read(reader, 1 << 20)
                except BlockingIOError:
                    continue
            received += data
            if not data and proc.poll() is not None:
                break
        _out, err = proc.communicate(timeout=60)
    finally:
        os.close(reader)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the pipe was replaced by a file"
    archive = tmp_path / "got.tar"
    archive.write_bytes(received)
    other = tmp_path / "other-home"
    res = run_cli(["import", str(archive)], home=other)
    assert res.returncode == 0, res.stderr

