"""The reachability memory (netstate.json) never keeps a pull from a source
that came back: a source remembered as refusing is probed once more before a
command answers offline, and a request that succeeds clears the memory at
once; a source still down fails as fast as before. A real mirror is stopped
and started again on the same port of 127.0.0.1, between CLI runs."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from qwenhome.config import Settings, Source, load_settings
from qwenhome.mirror import FolderBackend, HashCache, MirrorServer
from qwenhome.sources import NetState, ProbeResult, decide, record_outcomes
from tests.support.cli import RunCli
from tests.support.deadnet import refused_url
from tests.support.repos import GeneratedRepo


def netstate(home: Path) -> dict[str, dict[str, object]]:
    probes: dict[str, dict[str, object]] = json.loads((home / "qwenhome" / "netstate.json").read_text())["probes"]
    return probes


def timed(run_cli: RunCli, args: list[str]) -> tuple[float, int, str, str]:
    t0 = time.monotonic()
    rc, out, err = run_cli(args)
    return time.monotonic() - t0, rc, out, err


def test_a_mirror_that_came_back_is_used_at_once_and_one_still_down_fails_fast(
        run_cli: RunCli, qwen_home: Path, repos_root: Path, hash_cache: HashCache,
        small_repo: GeneratedRepo) -> None:
    url = refused_url()
    port = int(url.rsplit(":", 1)[1])

    t, rc, _, err = timed(run_cli, ["pull", "Org/Small", "--source", url])
    assert rc == 8 and err.startswith("error[offline]") and "connection-refused" in err, err
    assert t < 3.0, t
    assert netstate(qwen_home)[url]["ok"] is False, "the refusal is remembered"

    # Seconds later, well within the 60 s an unreachable verdict is kept.
    server = MirrorServer(FolderBackend(repos_root, hashes=hash_cache), port=port).start()
    try:
        rc, out, err = run_cli(["pull", "Org/Small", "--source", url, "--json"])
        assert rc == 0, err
        assert json.loads(out.strip().splitlines()[-1])["offline"] is False
        assert netstate(qwen_home)[url]["ok"] is True
        # A snapshot in the home (the cache could answer): still asked, not offline.
        rc, out, err = run_cli(["pull", "Org/Small", "--source", url, "--json"])
        assert rc == 0 and json.loads(out.strip().splitlines()[-1])["offline"] is False, err
    finally:
        server.stop()

    # Down again. The memory says reachable, so the request goes out, is
    # refused (and retried), and the refusal is remembered; the next command
    # asks once more and fails as fast as the first.
    rc, _, err = run_cli(["pull", "Org/Other", "--source", url])
    assert rc == 5 and f"error[connection-refused]: connection to 127.0.0.1:{port} refused" in err, err
    assert netstate(qwen_home)[url]["ok"] is False
    t, rc, _, err = timed(run_cli, ["pull", "Org/Other", "--source", url])
    assert rc == 8 and f"{url}: connection-refused" in err, err
    assert t < 3.0, t


def test_a_cached_pull_uses_a_mirror_that_came_back(
        run_cli: RunCli, qwen_home: Path, repos_root: Path, hash_cache: HashCache,
        small_repo: GeneratedRepo) -> None:
    """With a snapshot in the home, a remembered refusal used to answer
    offline from the cache for a minute after the mirror was back."""
    url = refused_url()
    port = int(url.rsplit(":", 1)[1])
    server = MirrorServer(FolderBackend(repos_root, hashes=hash_cache), port=port).start()
    try:
        assert run_cli(["pull", "Org/Small", "--source", url]).returncode == 0
    finally:
        server.stop()
    rc, out, err = run_cli(["pull", "Org/Small", "--source", url, "--json"])
    assert rc == 0 and json.loads(out.strip().splitlines()[-1])["offline"] is True, err
    assert netstate(qwen_home)[url]["ok"] is False

    server = MirrorServer(FolderBackend(repos_root, hashes=hash_cache), port=port).start()
    try:
        rc, out, err = run_cli(["pull", "Org/Small", "--source", url, "--json"])
    finally:
        server.stop()
    assert rc == 0 and json.loads(out.strip().splitlines()[-1])["offline"] is False, err


def _settings(home: Path, *urls: str) -> Settings:
    return load_settings({"HOME": str(home.parent)}, home=str(home), sources=list(urls))


def test_a_success_clears_a_remembered_time_out_at_once(qwen_home: Path) -> None:
    """A remembered time-out gets one quick probe before the answer is
    offline; a request that succeeded since then clears it, and the
    decision is online without a probe."""
    settings = _settings(qwen_home, "http://mirror.test:8090")
    [src] = settings.sources
    probed: list[list[str]] = []

    def probe(_st: Settings, srcs: list[Source]) -> list[ProbeResult]:
        probed.append([s.url for s in srcs])
        return [ProbeResult(s, False, "response-timeout", checked_at=time.time()) for s in srcs]

    state = NetState.load(settings)
    state.record(src, False, unreachable=True, code="response-timeout")
    state.save()
    assert not decide(settings, probe=probe).online
    assert probed == [["http://mirror.test:8090"]], "a quick second probe before offline"
    probed.clear()

    record_outcomes(settings, {src: (True, False, "ok")})
    decision = decide(settings, probe=probe)
    assert decision.online and decision.remembered and not probed


def test_a_remembered_refusal_is_probed_again_before_answering_offline(qwen_home: Path) -> None:
    settings = _settings(qwen_home, "http://a.test", "http://b.test")
    a, b = settings.sources
    state = NetState.load(settings)
    state.record(a, False, unreachable=True, code="connection-refused")
    state.record(b, False, unreachable=True, code="response-timeout")
    state.save()
    probed: list[list[str]] = []

    def probe(_st: Settings, srcs: list[Source]) -> list[ProbeResult]:
        probed.append([s.url for s in srcs])
        return [ProbeResult(s, s is a, "ok" if s is a else "connection-refused", 1.0, checked_at=time.time())
                for s in srcs]

    decision = decide(settings, probe=probe)
    assert decision.online and probed == [["http://a.test"]], "only the refusal, not the time-out, is asked again"


def test_a_remembered_time_out_gets_a_quick_second_probe_before_offline(
        qwen_home: Path, repos_root: Path, hash_cache: HashCache) -> None:
    """A source remembered as timing out, which is back (a real mirror on
    127.0.0.1): the command does not answer offline from memory; a quick
    probe finds it. One still silent costs only the quick probe's bound."""
    server = MirrorServer(FolderBackend(repos_root, hashes=hash_cache)).start()
    try:
        settings = _settings(qwen_home, server.url)
        [src] = settings.sources
        state = NetState.load(settings)
        state.record(src, False, unreachable=True, code="response-timeout")
        state.save()
        decision = decide(settings)
        assert decision.online and not decision.remembered, decision.reason
    finally:
        server.stop()

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (the backlog), never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        settings = _settings(qwen_home, url)
        [src] = settings.sources
        state = NetState.load(settings)
        state.record(src, False, unreachable=True, code="response-timeout")
        state.save()
        t0 = time.monotonic()
        decision = decide(settings)
        elapsed = time.monotonic() - t0
    assert not decision.online and decision.results[0].code == "response-timeout", decision.reason
    assert elapsed < settings.timeouts.probe, elapsed  # the quick probe, not the whole budget
