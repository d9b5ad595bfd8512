"""What the README promises about one misbehaving source, checked on a real
mirror: a server's ``Retry-After`` is waited out (the gap is measured in the
server's own request log), and a source that sends a little of every body
and then stalls fails the file with a clear code when no other source can
take over."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from qwenhome.config import load_settings
from qwenhome.pull import pull
from qwenhome.store import RepoRef
from qwenhome.transfer import EngineConfig
from qwenhome.transfer.retry import Backoff
from tests.support.cli import RunCli
from tests.support.faults import RequestRecord
from tests.support.mirror import Mirror
from tests.support.repos import GeneratedRepo
from tests.test_pull import assert_snapshot_matches

# Back-offs far shorter than the Retry-After, so only obeying it explains the gap.
QUICK = EngineConfig(stall_timeout=2.0, backoff=Backoff(base=0.02, cap=0.05), max_retries=4)


def gap(records: list[RequestRecord]) -> float:
    """Seconds between the end of the first answer and the start of the next request."""
    assert len(records) == 2, [(r.path, r.status) for r in records]
    return records[1].started - records[0].ended


@pytest.mark.parametrize("config", [QUICK, replace(QUICK, loop_threads=0)], ids=["event-loop", "worker-threads"])
def test_retry_after_is_waited_out_for_metadata_and_for_files(
        qwen_home: Path, mirror: Mirror, small_repo: GeneratedRepo, config: EngineConfig) -> None:
    revision = "/api/models/Org/Small/revision/main"
    mirror.faults.fail(503, times=1, path=revision, retry_after=2)
    mirror.faults.fail(429, times=1, path="config.json", method="GET", retry_after=2)
    settings = load_settings({"HOME": str(qwen_home.parent)}, home=str(qwen_home), sources=[mirror.url])
    pull(settings, RepoRef.parse("Org/Small"), config=config)
    assert_snapshot_matches(qwen_home, small_repo)
    metadata = mirror.faults.records(path=revision)
    files = mirror.faults.records(path="config.json", method="GET")
    assert [r.status for r in metadata] == [503, 200] and [r.status for r in files][:1] == [429]
    assert gap(metadata) >= 1.8, gap(metadata)
    assert gap(files) >= 1.8, gap(files)


def test_one_source_that_stalls_every_body_fails_the_file_with_a_clear_code(
        run_cli: RunCli, qwen_home: Path, mirror: Mirror, small_repo: GeneratedRepo) -> None:
    """The source sends 64 KiB of every body of the weights, then nothing: the
    configured stall time-out (0.5 s) ends each attempt, the retries run out,
    and with no other source the pull fails naming the file; the other
    files are in the home and the bytes received stay for a resume."""
    weights = "model.safetensors"
    mirror.faults.stall(64 * 1024, 30.0, times=None, path=weights)
    config = qwen_home / "qwenhome" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("[network]\nstall_timeout = 0.5\n[pull]\nmax_retries = 2\n")
    t0 = time.monotonic()
    rc, _, err = run_cli(["pull", "Org/Small", "--source", mirror.url], timeout=60)
    elapsed = time.monotonic() - t0
    last = err.strip().splitlines()[-1]
    assert rc == 5, err
    assert last.startswith(f"error[response-timeout]: 1 file(s) of Org/Small failed: {weights}: "
                           f"127.0.0.1:{mirror.server.port} sent nothing for 0.5 s"), last
    assert mirror.faults.hits("stall") >= 3, "each attempt was stalled"
    blobs = qwen_home / "hub" / "models--Org--Small" / "blobs"
    assert (blobs / small_repo.files["config.json"].etag).is_file(), "the healthy files are in the home"
    assert not (blobs / small_repo.files[weights].etag).exists()
    print(f"one stalling source failed the file in {elapsed:.1f} s: {last}")
