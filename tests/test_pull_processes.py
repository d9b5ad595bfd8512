"""Pulls as real processes: kill -9 and resume, several processes at once,
a full disk, and the CLI's error lines and exit codes."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import RunCli, clean_env
from tests.support.mirror import Mirror
from tests.support.repos import GeneratedRepo
from tests.support.tmpfs import mounted_tmpfs
from tests.test_pull import assert_snapshot_matches


def spawn_pull(home: Path, url: str, *args: str, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "qwenhome", "pull", "Org/Big", "--source", url, *args],
        env=clean_env(home, extra={"QWENHOME_TEST": "1"}), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, **popen,  # type: ignore[call-overload]
    )


def covered(map_file: Path) -> int:
    try:
        data = json.loads(map_file.read_text())
    except (OSError, ValueError):
        return 0
    return sum(e - s for s, e in data["done"])


def test_kill_9_midway_then_resume_fetches_only_the_missing_part(
        qwen_home: Path, mirror: Mirror, big_repo: GeneratedRepo) -> None:
    exp = big_repo.files["model.safetensors"]
    map_file = qwen_home / "qwenhome" / "partials" / f"{exp.etag}.part.json"
    mirror.faults.bandwidth(25_000_000)  # per connection, as CDNs do
    proc = spawn_pull(qwen_home, mirror.url, "--connections", "4")
    deadline = time.monotonic() + 60
    while covered(map_file) < exp.size // 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "pull made no progress"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    at_kill = covered(map_file)
    assert exp.size // 2 <= at_kill < exp.size
    first_run = mirror.faults.bytes_sent("model.safetensors")

    mirror.faults.bandwidth(None)
    proc2 = spawn_pull(qwen_home, mirror.url)
    _out, err = proc2.communicate(timeout=120)
    assert proc2.returncode == 0, err
    assert_snapshot_matches(qwen_home, big_repo)
    second_run = mirror.faults.bytes_sent("model.safetensors") - first_run
    # The second run fetched about the missing part, and the total stays
    # within 10% of the file size (bytes in flight at the kill are lost).
    assert second_run <= exp.size - at_kill + 0.05 * exp.size, (second_run, exp.size - at_kill)
    assert first_run + second_run <= 1.1 * exp.size
    assert not map_file.exists()


def test_four_processes_pulling_at_once_all_succeed_with_one_download(
        qwen_home: Path, mirror: Mirror, big_repo: GeneratedRepo) -> None:
    procs = [spawn_pull(qwen_home, mirror.url) for _ in range(4)]
    results = [p.communicate(timeout=180) for p in procs]
    for p, (_out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    assert_snapshot_matches(qwen_home, big_repo)
    size = big_repo.files["model.safetensors"].size
    assert mirror.faults.bytes_sent("model.safetensors") <= 1.1 * size
    blobs = list((qwen_home / "hub/models--Org--Big/blobs").iterdir())
    assert len(blobs) == 2, "one copy of each file, no temp files left"


def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_file_size_limit_gives_disk_full_error_and_a_consistent_store(
        qwen_home: Path, mirror: Mirror, big_repo: GeneratedRepo) -> None:
    proc = spawn_pull(qwen_home, mirror.url, preexec_fn=lambda: _limit_file_size(50_000_000))
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 7, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error[disk-full]:") and "hint:" in line
    assert not (qwen_home / "hub/models--Org--Big/refs/main").exists()
    assert not list((qwen_home / "hub").rglob("model.safetensors"))
    # With the limit gone the same command completes.
    proc2 = spawn_pull(qwen_home, mirror.url)
    assert proc2.wait(timeout=120) == 0
    assert_snapshot_matches(qwen_home, big_repo)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "tmpfs", "240m") as mnt:  # (without it, the RLIMIT test covers disk-full)
        yield mnt


def test_disk_filling_up_mid_transfer_keeps_partial_and_resumes(
        small_tmpfs: Path, mirror: Mirror, big_repo: GeneratedRepo) -> None:
    home = small_tmpfs / "home"
    exp = big_repo.files["model.safetensors"]
    map_file = home / "qwenhome" / "partials" / f"{exp.etag}.part.json"
    mirror.faults.bandwidth(20_000_000)
    proc = spawn_pull(home, mirror.url, "--connections", "4")
    deadline = time.monotonic() + 60
    while covered(map_file) < exp.size // 4:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    filler = small_tmpfs / "filler"
    with filler.open("wb") as f:  # another program eats the disk
        try:
            while True:
                f.write(b"\0" * (1 << 20))
        except OSError:
            pass
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 7, err
    assert "error[disk-full]" in err
    assert not (home / "hub/models--Org--Big/blobs" / exp.etag).exists()
    kept = covered(map_file)
    assert kept >= exp.size // 4, "the partial download survives"
    filler.unlink()
    mirror.faults.bandwidth(None)
    before = mirror.faults.bytes_sent("model.safetensors")
    proc2 = spawn_pull(home, mirror.url)
    _o, err2 = proc2.communicate(timeout=120)
    assert proc2.returncode == 0, err2
    assert mirror.faults.bytes_sent("model.safetensors") - before <= exp.size - kept + 0.05 * exp.size
    assert_snapshot_matches(home, big_repo)


def test_cli_errors_are_one_line_with_code_and_hint(run_cli: RunCli, mirror: Mirror) -> None:
    rc, _out, err = run_cli(["pull", "Org/Missing", "--source", mirror.url])
    assert rc == 3
    assert err.strip().startswith("error[repo-not-found]:") and "(hint:" in err
    rc, _out, err = run_cli(["pull", "not a repo"])
    assert rc == 2 and err.startswith("error[invalid-repo-id]")
    rc, _out, err = run_cli(["path", "Org/Small"])
    assert rc == 3 and err.startswith("error[snapshot-not-found]")
    rc, out, _err = run_cli(["pull", "Org/Missing", "--source", mirror.url, "--json"])
    assert json.loads(out)["error"]["code"] == "repo-not-found"


def test_cli_pull_json_progress_then_path_ls_verify_rm_gc(run_cli: RunCli, mirror: Mirror, qwen_home: Path) -> None:
    rc, out, err = run_cli(["pull", "Org/Small", "--source", mirror.url, "--json"])
    assert rc == 0, err
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert events[0]["event"] == "start" and events[-1]["event"] == "result"
    snapshot = events[-1]["snapshot"]
    rc, out, _ = run_cli(["path", "Org/Small", "--offline"])
    assert rc == 0 and out.strip() == snapshot
    rc, out, _ = run_cli(["ls", "--json"])
    [repo] = json.loads(out)["repos"]
    assert repo["repo"] == "Org/Small" and repo["revisions"][0]["complete"] is True
    rc, out, _ = run_cli(["verify", "--json"])
    assert rc == 0 and json.loads(out)["ok"] is True
    # Damage a blob: verify names it; --repair fetches it again.
    blob = next(p for p in (qwen_home / "hub/models--Org--Small/blobs").iterdir() if p.stat().st_size > 1000)
    data = bytearray(blob.read_bytes())
    data[10] ^= 0xFF
    blob.write_bytes(bytes(data))
    rc, out, _ = run_cli(["verify", "Org/Small", "--json"])
    assert rc == 6 and json.loads(out)["repos"][0]["bad"][0]["blob"] == blob.name
    rc, out, err = run_cli(["verify", "Org/Small", "--repair", "--source", mirror.url, "--json"])
    assert rc == 0, err
    rc, out, _ = run_cli(["verify", "Org/Small", "--json"])
    assert rc == 0 and json.loads(out)["ok"] is True
    rc, out, _ = run_cli(["rm", "Org/Small", "--json"])
    assert rc == 0 and json.loads(out)["freed"] > 0
    assert not (qwen_home / "hub/models--Org--Small").exists()
    rc, out, _ = run_cli(["gc", "--json", "--partial-age", "0"])
    assert rc == 0


def test_env_prints_exports_for_each_shell(run_cli: RunCli, qwen_home: Path) -> None:
    rc, out, _ = run_cli(["env"])
    assert rc == 0
    assert f"export HF_HUB_CACHE='{qwen_home}/hub'" in out and "unset TRANSFORMERS_CACHE" in out
    rc, out, _ = run_cli(["env", "--shell", "fish"])
    assert f"set -gx HF_HOME '{qwen_home}'" in out
    rc, out, _ = run_cli(["env", "--shell", "powershell"])
    assert f"$env:HF_HUB_CACHE = '{qwen_home}/hub'" in out
    # The bash output really configures a shell.
    script = out if False else run_cli(["env"]).stdout
    if shutil.which("bash"):
        r = subprocess.run(["bash", "-c", script + 'echo "$HF_HUB_CACHE|${TRANSFORMERS_CACHE-unset}"'],
                           env={"TRANSFORMERS_CACHE": "/elsewhere", "PATH": os.environ["PATH"]},
                           capture_output=True, text=True, check=True)
        assert r.stdout.strip() == f"{qwen_home}/hub|unset"
