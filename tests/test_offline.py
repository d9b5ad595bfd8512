"""Offline detection: a bounded parallel probe, remembered for a while, and
commands that answer from the cache at once when the network is down in each
of three ways: (a) the name does not resolve, (b) connections are refused,
(c) the address accepts and never answers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qwenhome.config import Settings, Source, Timeouts, load_settings
from qwenhome.pull import pull
from qwenhome.sources import (
    OFFLINE_TTL,
    ONLINE_TTL,
    PATIENT_FACTOR,
    NetState,
    NetworkDecision,
    ProbeResult,
    decide,
    probe_sources,
)
from qwenhome.store import RepoRef
from tests.conftest import RunCli
from tests.doctor_support.proxy_server import ForwardProxy
from tests.support.deadnet import UNRESOLVABLE_URL, BlackHole, refused_url
from tests.support.mirror import Mirror


def settings_for(home: Path, *urls: str, **env: str) -> Settings:
    return load_settings({"HOME": str(home.parent), **env}, home=str(home), sources=list(urls))


# Timing bounds are the budget under test plus what the same work costs here and
# now when nothing makes it wait (measured in the same test), plus a margin well
# below what a missing bound would cost (a second budget, or the OS time-outs).
MARGIN = 0.3  # seconds, in-process
CLI_MARGIN = 1.0  # seconds, between two runs of a fresh interpreter


def probe_overhead(home: Path) -> float:
    """Seconds a probe takes when nothing makes it wait (a refused port)."""
    t0 = time.monotonic()
    [res] = probe_sources(settings_for(home, refused_url()), timeout=0.5, remember=False)
    assert res.code == "connection-refused"
    return time.monotonic() - t0


@pytest.fixture(params=["a-unresolvable", "b-refused", "c-never-accepts", "c-accepts-never-replies"])
def dead_url(request: pytest.FixtureRequest) -> Iterator[str]:
    kind = request.param
    if kind == "a-unresolvable":
        yield UNRESOLVABLE_URL
    elif kind == "b-refused":
        yield refused_url()
    else:
        with BlackHole(accept=kind == "c-accepts-never-replies") as hole:
            yield hole.url


def test_probe_of_a_dead_source_ends_within_the_budget(qwen_home: Path, dead_url: str) -> None:
    baseline = probe_overhead(qwen_home)
    t0 = time.monotonic()
    [res] = probe_sources(settings_for(qwen_home, dead_url), timeout=0.5, remember=False)
    elapsed = time.monotonic() - t0
    assert not res.ok
    assert res.code in ("dns-resolution-failed", "dns-timeout", "connection-refused", "response-timeout")
    if dead_url == UNRESOLVABLE_URL:
        assert res.code.startswith("dns")
    assert elapsed < 0.5 + baseline + MARGIN, (elapsed, baseline)


def test_a_host_that_closes_at_once_is_alive_not_a_black_hole(qwen_home: Path) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def close_at_once() -> None:
        try:
            conn, _ = srv.accept()
            conn.recv(1024)
            conn.close()
        except OSError:
            pass

    threading.Thread(target=close_at_once, daemon=True).start()
    baseline = probe_overhead(qwen_home)
    try:
        [res] = probe_sources(settings_for(qwen_home, f"http://127.0.0.1:{srv.getsockname()[1]}"), timeout=0.5,
                              remember=False)
    finally:
        srv.close()
    # Answered about as fast as a refused port: not after the 0.5 s budget.
    assert res.ok and res.latency_ms is not None and res.latency_ms < 1000 * (baseline + 0.25), baseline


# The test proxy's thread raises when its upstream refuses; that is the point here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_probe_goes_through_the_proxy_and_needs_the_origin_behind_it(qwen_home: Path, mirror: Mirror) -> None:
    with ForwardProxy() as proxy:
        dead = refused_url()
        results = probe_sources(settings_for(qwen_home, mirror.url, dead, HTTP_PROXY=proxy.url), timeout=0.5,
                                remember=False)
        assert [r.code for r in results] == ["ok", "proxy-refused"], [r.message for r in results]
        assert f"HEAD {mirror.url}/ HTTP/1.1" in proxy.requests


def test_probe_abandons_a_hanging_resolver(qwen_home: Path) -> None:
    def hanging(*_a: Any, **_k: Any) -> Any:
        time.sleep(3)
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    baseline = probe_overhead(qwen_home)
    t0 = time.monotonic()
    [res] = probe_sources(settings_for(qwen_home, "http://slow-dns.test"), timeout=0.3, resolver=hanging,
                          remember=False)
    assert time.monotonic() - t0 < 0.3 + baseline + MARGIN, baseline  # not the resolver's 3 s
    assert (res.ok, res.code, res.stage) == (False, "dns-timeout", "dns")


def test_probe_of_live_sources_runs_in_parallel_and_ranks(qwen_home: Path, mirror: Mirror) -> None:
    baseline = probe_overhead(qwen_home)
    with BlackHole() as hole, BlackHole() as hole2:
        t0 = time.monotonic()
        results = probe_sources(settings_for(qwen_home, hole.url, hole2.url, refused_url(), mirror.url),
                                timeout=0.5)
        # One budget for all sources, not one each (two silent ones: 1 s and more).
        assert time.monotonic() - t0 < 0.5 + baseline + MARGIN, baseline
    assert [r.code for r in results] == ["response-timeout", "response-timeout", "connection-refused", "ok"]
    assert results[3].latency_ms is not None and results[3].latency_ms < 1000 * (baseline + 0.25), baseline
    saved = json.loads((qwen_home / "qwenhome" / "netstate.json").read_text())
    assert saved["probes"][mirror.url]["ok"] is True


def test_decision_is_remembered_offline_longer_than_online(qwen_home: Path) -> None:
    settings = settings_for(qwen_home, "http://down.test", "http://up.test")
    calls: list[list[str]] = []
    clock = [1000.0]

    def fake_probe(st: Settings, srcs: list[Source]) -> list[ProbeResult]:
        calls.append([s.name for s in srcs])
        out = [ProbeResult(s, s.url == "http://up.test", "ok" if s.url == "http://up.test" else "connection-refused",
                           5.0, checked_at=clock[0]) for s in srcs]
        state = NetState.load(st)
        for r in out:
            state.put_probe(r)
        state.save()
        return out

    def wall() -> float:
        return clock[0]

    assert decide(settings, probe=fake_probe, wall=wall).online
    assert len(calls) == 1
    clock[0] += ONLINE_TTL / 2
    d = decide(settings, probe=fake_probe, wall=wall)
    assert d.online and d.remembered and len(calls) == 1, "fresh verdicts are not probed again"
    clock[0] += ONLINE_TTL
    decide(settings, probe=fake_probe, wall=wall)
    assert calls[-1] == ["hf1"], "only the stale (online) verdict is probed again"
    clock[0] += OFFLINE_TTL
    decide(settings, probe=fake_probe, wall=wall)
    assert sorted(calls[-1]) == ["hf", "hf1"]


def test_forced_offline_and_hf_hub_offline_never_probe(qwen_home: Path) -> None:
    def boom(_s: Settings, _srcs: list[Source]) -> list[ProbeResult]:
        raise AssertionError("probed")

    assert not decide(settings_for(qwen_home, "http://x.test").with_offline(True), probe=boom).online
    assert not decide(settings_for(qwen_home, "http://x.test", HF_HUB_OFFLINE="1"), probe=boom).online


# -- commands, as subprocesses ------------------------------------------------------------

@pytest.fixture
def cached(qwen_home: Path, mirror: Mirror) -> Path:
    """``Org/Small`` pulled into the home while the network was up."""
    return pull(settings_for(qwen_home, mirror.url), RepoRef.parse("Org/Small")).snapshot


def timed(run_cli: RunCli, args: list[str], **kw: Any) -> tuple[float, Any]:
    t0 = time.monotonic()
    res = run_cli(args, **kw)
    return time.monotonic() - t0, res


def cli_overhead(run_cli: RunCli) -> float:
    """Seconds a command takes that never touches the network (``path`` of a cached
    repository): a fresh interpreter, imports, the store."""
    t, res = timed(run_cli, ["path", "Org/Small"])
    assert res.returncode == 0, res.stderr
    return t


def test_cached_pull_and_path_answer_at_once_when_the_network_is_down(
        run_cli: RunCli, cached: Path, dead_url: str) -> None:
    baseline = cli_overhead(run_cli)
    t_pull, res = timed(run_cli, ["pull", "Org/Small"], endpoint=dead_url)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(cached)
    assert "offline" in res.stderr
    t_path, res = timed(run_cli, ["path", "Org/Small"], endpoint=dead_url)
    assert res.returncode == 0 and res.stdout.strip() == str(cached)
    # The short probe's budget at most, then the cache (bench/offline.py measures the 1.5 s goal).
    assert t_pull < baseline + Timeouts().probe + CLI_MARGIN, (t_pull, baseline)
    assert t_path < baseline + CLI_MARGIN, (t_path, baseline)


@pytest.mark.parametrize("state", ["refused", "black-hole"])
def test_missing_repo_offline_fails_fast_naming_it(run_cli: RunCli, cached: Path, state: str) -> None:
    baseline = cli_overhead(run_cli)
    with BlackHole() as hole:
        url = refused_url() if state == "refused" else hole.url
        t, res = timed(run_cli, ["pull", "Org/Other", "--json"], endpoint=url)
    assert res.returncode == 8, res.stderr
    err = json.loads(res.stdout)["error"]
    assert err["code"] == "offline" and "Org/Other" in err["message"]
    # Nothing cached could answer, so a silent address gets, after the short probe
    # (0.8 s), the patient one (5 x 0.8 s): far from the minutes of stacked time-outs.
    probe = Timeouts().probe
    budget = probe if state == "refused" else probe + probe * PATIENT_FACTOR
    assert t < baseline + budget + CLI_MARGIN, (t, baseline)


def test_with_nothing_cached_the_metadata_request_does_not_wait_for_the_probe(qwen_home: Path,
                                                                              mirror: Mirror) -> None:
    """Nothing cached can answer and there is one source: the probe cannot
    change what is asked, so the revision request goes out beside it rather
    than a round trip after it (the probe's verdict is held back here)."""
    answered: list[float] = []
    held = threading.Event()

    def slow_probe(settings: Settings, patient: bool) -> NetworkDecision:
        # Answer only once the server has answered the revision request (or after 10 s).
        deadline = time.monotonic() + 10
        while not any("/revision/" in r.path for r in list(mirror.faults.log)):
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        else:
            held.set()
        answered.append(time.monotonic())
        return decide(settings, patient=patient)

    pull(settings_for(qwen_home, mirror.url), RepoRef.parse("Org/Small"), decide_network=slow_probe)
    assert held.is_set(), "the revision request waited for the probe"
    revision = [r for r in mirror.faults.records() if "/revision/" in r.path]
    assert answered and revision and revision[0].ended <= answered[0]


def test_slow_network_is_not_offline_when_nothing_cached_could_answer(qwen_home: Path) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def slow_http() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                conn.recv(1024)
                stop.wait(1.2)  # slower than the short probe, well within the patient one
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                conn.close()
            except OSError:
                return

    threading.Thread(target=slow_http, daemon=True).start()
    try:
        settings = settings_for(qwen_home, f"http://127.0.0.1:{srv.getsockname()[1]}")
        quick = decide(settings)
        assert not quick.online and quick.results[0].code == "response-timeout"
        assert decide(settings, patient=True).online, "a remembered time-out is probed again, patiently"
    finally:
        stop.set()
        srv.close()


def test_offline_verdict_is_remembered_between_commands(run_cli: RunCli, cached: Path) -> None:
    with BlackHole() as hole:
        assert run_cli(["pull", "Org/Small"], endpoint=hole.url).returncode == 0
        seen = hole.connections()
        assert seen == 1, "the probe connected once"
        _t, res = timed(run_cli, ["pull", "Org/Small", "--json"], endpoint=hole.url)
        assert res.returncode == 0
        # The remembered time-out is not the last word: one quick probe (a
        # quarter of the budget) before the cache answers.
        assert hole.connections() == seen + 1, "one quick second probe"
        assert json.loads(res.stdout.strip().splitlines()[-1])["offline"] is True


@pytest.mark.parametrize("how", [["--offline"], "HF_HUB_OFFLINE"])
def test_forced_offline_touches_no_socket(run_cli: RunCli, cached: Path, how: Any) -> None:
    with BlackHole() as hole:
        args = ["pull", "Org/Small"] + (how if isinstance(how, list) else [])
        env = {"HF_HUB_OFFLINE": "1"} if how == "HF_HUB_OFFLINE" else None
        res = run_cli(args, endpoint=hole.url, env=env)
        assert res.returncode == 0 and res.stdout.strip() == str(cached)
        assert hole.connections() == 0


def test_sources_probe_lists_health_latency_and_ranks(run_cli: RunCli, mirror: Mirror) -> None:
    dead = refused_url()
    res = run_cli(["sources", "--probe", "--json", "--source", dead, "--source", mirror.url])
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)["sources"]
    assert [r["url"] for r in rows] == [mirror.url, dead], "reachable first"
    assert rows[0]["probe"]["ok"] is True and rows[0]["probe"]["latency_ms"] is not None
    assert rows[1]["probe"]["code"] == "connection-refused"
    text = run_cli(["sources", "--probe", "--source", dead, "--source", mirror.url]).stdout
    assert "connection-refused" in text and "ms" in text
