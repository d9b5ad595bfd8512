"""A source that trickles a body (a few bytes every fraction of a second,
never silent long enough for the stall time-out) is cut by the minimum-rate
rule on both I/O paths, and the pull ends with ``response-timeout`` instead
of running forever; the rule's window and rate are set like the stall
time-out (``[network] rate_window`` and ``min_rate`` in config.toml; a
min_rate of 0 turns the rule off)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from qwenhome.config import Settings, load_settings
from qwenhome.errors import QwenhomeError
from qwenhome.mirror import FolderBackend, HashCache
from qwenhome.pull import engine_config, pull
from qwenhome.store import RepoRef
from qwenhome.transfer import EngineConfig
from qwenhome.transfer.retry import Backoff
from qwenhome.transfer.scheduler import Splits
from tests.support import tuning
from tests.support.cli import RunCli
from tests.support.mirror import Mirror, start_mirror
from tests.support.rawserver import canned_server
from tests.support.repos import GeneratedRepo
from tests.test_pull import assert_snapshot_matches

WEIGHTS = "model.safetensors"
# The stall time-out is longer than any gap of the trickle: only the rate rule can end it.
# Seconds a pull may take before the test calls it endless: the trickles here
# would take hours; a loaded machine (2 cores shared) takes 3 times the 10 s.
BOUND = 90.0
SHORT = EngineConfig(stall_timeout=2.0, rate_window=1.0, backoff=Backoff(base=0.02, cap=0.05), max_retries=2)


def pull_within(settings: Settings, config: EngineConfig, mirror: Mirror, seconds: float) -> BaseException | None:
    """Pull Org/Small in a thread: what it raised (None: it completed); the
    test fails when it still runs after ``seconds``."""
    outcome: list[BaseException | None] = []
    cancel = threading.Event()

    def run() -> None:
        try:
            pull(settings, RepoRef.parse("Org/Small"), config=config, cancel=cancel)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        cancel.set()
        mirror.faults.release()
        pytest.fail(f"the pull from a trickling source was still running after {seconds:g} s")
    return outcome[0]


@pytest.mark.parametrize("config", [SHORT, replace(SHORT, loop_threads=0)], ids=["event-loop", "worker-threads"])
def test_a_trickled_body_is_cut_and_the_file_fails_with_a_clear_code(
        qwen_home: Path, mirror: Mirror, small_repo: GeneratedRepo, config: EngineConfig) -> None:
    mirror.faults.trickle(64 * 1024, 8, 0.1, times=None, path=WEIGHTS)  # 80 B/s, a gap of 0.1 s
    settings = load_settings({"HOME": str(qwen_home.parent)}, home=str(qwen_home), sources=[mirror.url])
    t0 = time.monotonic()
    exc = pull_within(settings, config, mirror, BOUND)
    elapsed = time.monotonic() - t0
    assert isinstance(exc, QwenhomeError) and exc.code == "response-timeout", exc
    assert WEIGHTS in str(exc) and f"127.0.0.1:{mirror.server.port} sent " in str(exc), exc
    assert "in 1 s" in str(exc), exc
    assert mirror.faults.hits("trickle") >= 2, "each attempt was trickled"
    blobs = qwen_home / "hub" / "models--Org--Small" / "blobs"
    assert (blobs / small_repo.files["config.json"].etag).is_file(), "the healthy files are in the home"
    assert not (blobs / small_repo.files[WEIGHTS].etag).exists()
    print(f"a trickled body failed the file in {elapsed:.1f} s: {exc}")


def test_the_rate_window_comes_from_config_toml(run_cli: RunCli, qwen_home: Path, mirror: Mirror) -> None:
    mirror.faults.trickle(64 * 1024, 8, 0.1, times=None, path=WEIGHTS)
    write_config(qwen_home, "")
    assert "in 1 s" in _cut_line(run_cli, mirror, timeout=60)


def _cut_line(run_cli: RunCli, mirror: Mirror, timeout: float) -> str:
    """The error line of a pull of Org/Small whose weights were cut as too slow."""
    rc, _, err = run_cli(["pull", "Org/Small", "--source", mirror.url], timeout=timeout)
    last = err.strip().splitlines()[-1]
    assert rc == 5, err
    assert last.startswith(f"error[response-timeout]: 1 file(s) of Org/Small failed: {WEIGHTS}: "
                           f"127.0.0.1:{mirror.server.port} sent "), last
    return last


def test_a_slow_but_steady_body_is_not_cut(qwen_home: Path, mirror: Mirror, small_repo: GeneratedRepo) -> None:
    """800 B/s for longer than a window stays above the floor: the pull completes."""
    mirror.faults.trickle(0, 400, 0.5, times=None, path="sub/dir/notes.txt")
    settings = load_settings({"HOME": str(qwen_home.parent)}, home=str(qwen_home), sources=[mirror.url])
    pull(settings, RepoRef.parse("Org/Small"), config=SHORT)
    blobs = qwen_home / "hub" / "models--Org--Small" / "blobs"
    assert (blobs / small_repo.files["sub/dir/notes.txt"].etag).is_file()
    assert mirror.faults.hits("trickle") == 1


@pytest.mark.parametrize("config", [SHORT, replace(SHORT, loop_threads=0)], ids=["event-loop", "worker-threads"])
def test_a_trickling_source_is_left_for_the_next_one(
        qwen_home: Path, mirror: Mirror, repos_root: Path, hash_cache: HashCache, small_repo: GeneratedRepo,
        config: EngineConfig) -> None:
    """As after a stall, the file moves to the next source and the pull completes."""
    mirror.faults.trickle(64 * 1024, 8, 0.1, times=None, path=WEIGHTS)
    with start_mirror(FolderBackend(repos_root, hashes=hash_cache)) as good:
        settings = load_settings({"HOME": str(qwen_home.parent)}, home=str(qwen_home), sources=[mirror.url, good.url])
        t0 = time.monotonic()
        assert pull_within(settings, config, mirror, BOUND) is None
        elapsed = time.monotonic() - t0
        assert good.faults.bytes_sent(WEIGHTS) > 0, "the weights came from the second source"
    assert_snapshot_matches(qwen_home, small_repo)
    assert mirror.faults.hits("trickle") >= 1
    print(f"left a trickling source in {elapsed:.1f} s")


@pytest.mark.parametrize("config", [SHORT, replace(SHORT, loop_threads=0)], ids=["event-loop", "worker-threads"])
def test_an_answer_head_dripped_by_a_redirect_target_is_cut(
        qwen_home: Path, mirror: Mirror, config: EngineConfig) -> None:
    """The weights redirect to a server that sends its answer's head a byte
    every 0.05 s: the event loop's rate floor (head bytes count) and the
    threads' head deadline cut it; the file fails with response-timeout."""
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"y" * 40) for i in range(40)) + \
        b"Content-Length: 2\r\n\r\nok"
    with canned_server(head, drip=0.05) as cdn:
        mirror.faults.respond(302, b"", path=WEIGHTS, method="GET", headers={"Location": f"{cdn}/w"})
        settings = load_settings({"HOME": str(qwen_home.parent)}, home=str(qwen_home), sources=[mirror.url])
        exc = pull_within(settings, config, mirror, BOUND)
    assert isinstance(exc, QwenhomeError) and exc.code == "response-timeout", exc
    assert WEIGHTS in str(exc), exc


def test_a_trickle_after_a_fast_start_is_cut_though_the_socket_gathers(
        qwen_home: Path, mirror: Mirror, small_repo: GeneratedRepo) -> None:
    """A fast first half MiB makes the event loop's sockets gather bytes
    (SO_RCVLOWAT, by the body's rate so far) before reporting them; the
    trickle that follows sits below that mark, unread. It still counts: each
    attempt is cut and the next one brings its fast half MiB, so the pull
    ends (it hung in 2 runs of 3 when waiting bytes reset the window)."""
    mirror.faults.trickle(512 * 1024, 8, 0.1, times=None, path=WEIGHTS)
    settings = load_settings({"HOME": str(qwen_home.parent)}, home=str(qwen_home), sources=[mirror.url])
    # Ranges longer than the fast start, never split (a split's rest would come fast).
    config = tuning.tuned(tuning.ranges(SHORT, 4 << 20), splits=Splits(steal_min=1 << 40, hash_lag=1 << 40))
    exc = pull_within(settings, config, mirror, BOUND)
    assert mirror.faults.hits("trickle") >= 2, "the attempts were trickled"
    if exc is None:
        assert_snapshot_matches(qwen_home, small_repo)
    else:
        assert isinstance(exc, QwenhomeError) and exc.code == "response-timeout", exc


# -- the rate is configurable too ([network] min_rate; 0 turns the rule off) ---------

def write_config(qwen_home: Path, network: str) -> None:
    config = qwen_home / "qwenhome" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"[network]\nstall_timeout = 2\nrate_window = 1\n{network}[pull]\nmax_retries = 1\n")


def test_a_body_under_the_configured_min_rate_is_cut(run_cli: RunCli, qwen_home: Path, mirror: Mirror) -> None:
    """800 B/s passes the default floor (256 B/s, the pull would take hours);
    with min_rate = 2000 it is cut, and the error names that rate."""
    mirror.faults.trickle(0, 400, 0.5, times=None, path=WEIGHTS)
    write_config(qwen_home, "min_rate = 2000\n")
    assert "in 1 s (under 2000 bytes/s)" in _cut_line(run_cli, mirror, timeout=30)


@pytest.mark.parametrize("loop_threads", [2, 0], ids=["event-loop", "worker-threads"])
def test_min_rate_zero_lets_a_trickle_finish(qwen_home: Path, mirror: Mirror, small_repo: GeneratedRepo,
                                             loop_threads: int) -> None:
    """1000 bytes at 200 B/s: each attempt is cut under the default floor
    (256 B/s over a 1 s window); with min_rate = 0 the file comes whole, slowly."""
    mirror.faults.trickle(0, 20, 0.1, times=None, path="sub/dir/notes.txt")
    write_config(qwen_home, "min_rate = 0\n")
    settings = load_settings({"HOME": str(qwen_home.parent)}, home=str(qwen_home), sources=[mirror.url])
    assert settings.timeouts.min_rate == 0
    config = replace(engine_config(settings), loop_threads=loop_threads, backoff=SHORT.backoff)
    t0 = time.monotonic()
    assert pull_within(settings, config, mirror, BOUND) is None
    elapsed = time.monotonic() - t0
    blobs = qwen_home / "hub" / "models--Org--Small" / "blobs"
    assert (blobs / small_repo.files["sub/dir/notes.txt"].etag).is_file()
    assert mirror.faults.hits("trickle") == 1, "one attempt, never cut"
    assert elapsed > 4, elapsed  # (the trickle did run: 1000 bytes at 200 B/s)


@pytest.mark.parametrize("value", ["-1", '"256"', "1e12", "nan", "inf", "true", "[256]"])
def test_a_bad_min_rate_is_one_config_error_line(run_cli: RunCli, qwen_home: Path, value: str) -> None:
    write_config(qwen_home, f"min_rate = {value}\n")
    rc, out, err = run_cli(["pull", "Org/Small", "--source", "http://127.0.0.1:9"], timeout=60)
    assert rc == 2 and out == "", err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error[config-invalid]: ") and "min_rate = " in err, err
    assert "it must be a number from 0 to " in err and "(hint: fix or remove the file" in err, err
