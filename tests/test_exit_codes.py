"""Exit codes of real ``qwenhome pull`` processes that earlier tests did not
reach: 130 for Ctrl+C midway (and the rerun resumes) or while a source is slow
to answer, 7 from the free-space check before any byte moves. 4 and 5 are in
``test_error_codes.py``."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from qwenhome.errors import EXIT_DISK, EXIT_INTERRUPTED, EXIT_OK
from tests.support.cli import start_cli
from tests.support.mirror import Mirror
from tests.support.repos import GeneratedRepo
from tests.support.tmpfs import mounted_tmpfs
from tests.test_pull import assert_snapshot_matches
from tests.test_pull_processes import covered, spawn_pull

WEIGHTS = "model.safetensors"
REVISION = "/api/models/Org/Small/revision/main"


def test_ctrl_c_midway_exits_130_saying_run_again_and_the_rerun_fetches_only_the_rest(
        qwen_home: Path, mirror: Mirror, big_repo: GeneratedRepo) -> None:
    exp = big_repo.files[WEIGHTS]
    map_file = qwen_home / "qwenhome" / "partials" / f"{exp.etag}.part.json"
    mirror.faults.bandwidth(20_000_000)  # per connection: a few seconds for the 200 MB file
    proc = spawn_pull(qwen_home, mirror.url, "--connections", "4")
    deadline = time.monotonic() + 60
    while covered(map_file) < exp.size // 4:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "pull made no progress"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert err.strip().splitlines()[-1] == (
        "error[interrupted]: stopped by the user (hint: run the same command again to resume)")
    assert "Traceback" not in err
    at_stop = covered(map_file)
    assert exp.size // 4 <= at_stop < exp.size, "the ranges on disk are kept"
    assert not (qwen_home / "hub/models--Org--Big/refs/main").exists()
    first_run = mirror.faults.bytes_sent(WEIGHTS)

    mirror.faults.bandwidth(None)
    proc2 = spawn_pull(qwen_home, mirror.url)
    _out, err2 = proc2.communicate(timeout=120)
    assert proc2.returncode == EXIT_OK, err2
    assert_snapshot_matches(qwen_home, big_repo)
    second_run = mirror.faults.bytes_sent(WEIGHTS) - first_run
    # Only the rest moves again (what was in flight at Ctrl+C is fetched twice).
    assert second_run <= exp.size - at_stop + 0.05 * exp.size, (second_run, exp.size - at_stop)


def test_ctrl_c_while_the_first_source_is_slow_to_answer_exits_130_not_retried_nor_failed_over(
        qwen_home: Path, mirror: Mirror, store_mirror: Mirror) -> None:
    """Two sources: the metadata request goes out in the main thread, where
    Ctrl+C lands. It stops the pull; it is not a network error to retry, nor a
    reason to go on with the second source."""
    mirror.faults.latency(60, times=None, path=REVISION)
    proc = start_cli(["pull", "Org/Small", "--source", mirror.url, "--source", store_mirror.url], home=qwen_home)
    try:
        deadline = time.monotonic() + 60
        while mirror.faults.hits("latency") == 0:  # the request is at the server, the client waits for it
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the metadata request never came"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        mirror.faults.release()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert err.strip().splitlines()[-1] == (
        "error[interrupted]: stopped by the user (hint: run the same command again to resume)")
    assert "retry" not in err
    assert mirror.faults.hits("latency") == 1, "not asked again"
    assert not store_mirror.faults.records(path=REVISION), "not asked of the next source"


def test_a_disk_too_small_is_refused_before_any_byte_moves(
        tmp_path: Path, mirror: Mirror, big_repo: GeneratedRepo) -> None:
    with mounted_tmpfs(tmp_path / "small-disk", "20m") as disk:
        home = disk / "home"
        proc = spawn_pull(home, mirror.url)
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == EXIT_DISK, err
        line = err.strip().splitlines()[-1]
        assert line.startswith("error[disk-full]: need 190.7 MiB at ") and " MiB free (hint: free space" in line
        assert sum(mirror.faults.bytes_sent(rel) for rel in big_repo.files) == 0, (
            "checked before the transfer, not found out midway")
        assert not any(p.stat().st_size for p in (home / "qwenhome" / "partials").glob("*") if p.is_file())
