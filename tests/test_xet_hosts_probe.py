"""``qwenhome sources --probe`` and the doctor name the Xet hosts a Hub source
really uses (token endpoint, CAS, xorb host), found as the client finds them,
and say which one fails and the fix: against the project's own Xet server
with its CAS or xorb host named ``.invalid`` (never resolves) or its port
closed; a healthy Xet server reports ok. With ``--offline`` or
``HF_HUB_OFFLINE=1`` the probe sends nothing."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qwenhome.doctor import render_report, run_doctor
from qwenhome.mirror import FolderBackend
from tests.doctor_support.dns_server import DnsServer
from tests.doctor_support.setup import options_for, settings_for
from tests.support.cli import clean_env, run_cli
from tests.support.deadnet import BlackHole
from tests.support.faults import kind
from tests.support.mirror import Mirror
from tests.support.netns import netns_unavailable, run_isolated
from tests.support.repos import GeneratedRepo, make_repo
from tests.support.xet_mirror import random_bytes, start_xet_mirror

REPO = "Org/XetHosts"
MiB = 1 << 20
# How each Xet host is taken away: the mirror's option, or the listener closed.
AWAY: dict[str, dict[str, Any]] = {
    "cas-host-unresolvable": {"cas_host": "xet-cas.invalid"},
    "xorb-host-unresolvable": {"xorb_host": "xet-transfer.invalid"},
    "cas-port-refused": {},
    "xorb-port-refused": {},
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> GeneratedRepo:
    root = tmp_path_factory.mktemp("xet-hosts-repos")
    return make_repo(root, REPO, {"model.safetensors": random_bytes(2 * MiB + 3, 5),
                                  "small.bin": random_bytes(MiB, 6), "config.json": b'{"model_type": "qwen2"}\n'})


def _mirror(repo: GeneratedRepo, tmp_path: Path, away: str | None = None) -> Mirror:
    m = start_xet_mirror(FolderBackend(repo.root), tmp_path / "xet", cas_port=0, xorb_port=0,
                         **AWAY.get(away or "", {}))
    if away and away.endswith("refused"):
        m.server.stop_listener(away.split("-")[0])
    return m


@pytest.fixture
def healthy(repo: GeneratedRepo, tmp_path: Path) -> Iterator[Mirror]:
    with _mirror(repo, tmp_path) as m:
        yield m


def _probe(m: Mirror, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    res = run_cli(["sources", "--probe", "--json", "--repo", REPO, *args], home=tmp_path / "home",
                  endpoint=m.url, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    [row] = json.loads(res.stdout)["sources"]
    assert row["probe"]["ok"] is True
    return row["xet"]  # type: ignore[no-any-return]


def _failing(m: Mirror, away: str) -> tuple[str, str, str]:
    """The role, host and code of the Xet host taken away."""
    role = away.split("-")[0]
    if away.endswith("refused"):
        return role, "127.0.0.1", "connection-refused"
    return role, AWAY[away][f"{role}_host"], "dns-resolution-failed"


def test_sources_probe_names_the_token_endpoint_cas_and_xorb_host_of_a_healthy_xet_mirror(
        healthy: Mirror, tmp_path: Path) -> None:
    xet = _probe(healthy, tmp_path)
    assert (xet["state"], xet["repo"], xet["file"], xet["ok"]) == ("xet", REPO, "small.bin", True)
    ports = {h["role"]: int(h["url"].rsplit(":", 1)[1]) for h in xet["hosts"]}
    assert ports == {"token": healthy.server.port, "cas": healthy.server.port_of("cas"),
                     "xorb": healthy.server.port_of("xorb")}
    assert all(h["ok"] and h["code"] == "ok" and h["latency_ms"] is not None and not h["fix"] for h in xet["hosts"])
    # The client's own questions were asked: the token, then one byte's reconstruction.
    assert healthy.faults.of_kind("xet-read-token") and healthy.faults.of_kind("reconstruction")
    assert not healthy.faults.of_kind("xorb")
    text = run_cli(["sources", "--probe", "--repo", REPO], home=tmp_path / "home", endpoint=healthy.url).stdout
    assert "Xet hosts of" in text and "fix:" not in text
    assert f"127.0.0.1:{healthy.server.port_of('xorb')}" in text


@pytest.mark.parametrize("away", list(AWAY))
def test_sources_probe_names_the_xet_host_that_does_not_resolve_or_refuses_and_the_fix(
        away: str, repo: GeneratedRepo, tmp_path: Path) -> None:
    with _mirror(repo, tmp_path, away) as m:
        role, host, code = _failing(m, away)
        xet = _probe(m, tmp_path)
        text = run_cli(["sources", "--probe", "--repo", REPO], home=tmp_path / "home", endpoint=m.url).stdout
    by_role = {h["role"]: h for h in xet["hosts"]}
    bad = by_role[role]
    assert (bad["ok"], bad["code"], bad["host"]) == (False, code, host)
    words = {"cas": "Xet CAS host", "xorb": "Xet xorb host"}[role]
    assert f"the {words} {host}" in bad["summary"] and "falls back to the resolve bridge" in bad["summary"]
    assert "HF_HUB_DISABLE_XET=1" in bad["fix"]
    assert ("resolve" if code == "dns-resolution-failed" else "--cas-port") in bad["fix"]
    assert by_role["token"]["ok"] is True and xet["ok"] is False
    if role == "cas":
        assert "xorb" not in by_role, "the xorb host is learnt from the CAS only"
        assert xet["note"].startswith("the xorb hosts are not known")
    else:
        assert by_role["cas"]["ok"] is True
    assert f"the {words} {host}" in text and "fix: " in text and code in text


def test_doctor_reports_the_xet_hosts_a_healthy_mirror_uses_as_passing(healthy: Mirror, tmp_path: Path) -> None:
    report = run_doctor(settings_for(tmp_path, [healthy.url]), repo=REPO, options=options_for(tmp_path))
    xet = {c.id.split(":")[0]: c for c in report.checks if c.id.startswith("xet-")}
    assert set(xet) == {"xet-token", "xet-cas", "xet-xorb"}
    assert all(c.status == "pass" and c.host == "127.0.0.1" for c in xet.values())
    assert "HTTP 206" in xet["xet-xorb"].summary  # one byte of a xorb came through its signed URL
    assert report.ok and report.verdict == "ok", render_report(report)


def test_with_xet_turned_off_neither_asks_the_xet_hosts(repo: GeneratedRepo, tmp_path: Path) -> None:
    with _mirror(repo, tmp_path, "cas-host-unresolvable") as m:
        xet = _probe(m, tmp_path, env={"HF_HUB_DISABLE_XET": "1"})
        settings = settings_for(tmp_path, [m.url], {"HF_HUB_DISABLE_XET": "1"})
        report = run_doctor(settings, repo=REPO, options=options_for(tmp_path))
        assert not m.faults.of_kind("xet-read-token") and not m.faults.of_kind("reconstruction")
    assert (xet["state"], xet["hosts"], xet["ok"]) == ("off", [], None)
    assert not any(c.id.startswith("xet-") for c in report.checks) and report.ok
    assert next(c for c in report.checks if c.id == "xet:hf").status == "skip"


@pytest.mark.parametrize("away", list(AWAY))
def test_doctor_names_the_failing_xet_host_and_the_fix_in_its_verdict(
        away: str, repo: GeneratedRepo, tmp_path: Path) -> None:
    with _mirror(repo, tmp_path, away) as m, DnsServer() as dns:  # (NXDOMAIN for every name)
        role, host, code = _failing(m, away)
        report = run_doctor(settings_for(tmp_path, [m.url]), repo=REPO, options=options_for(tmp_path, [dns.address]))
    check = next(c for c in report.checks if c.id.startswith(f"xet-{role}:"))
    assert (check.status, check.code, check.host) == ("fail", code, host)
    words = {"cas": "Xet CAS host", "xorb": "Xet xorb host"}[role]
    assert f"the {words} {host}" in check.summary and "HF_HUB_DISABLE_XET=1" in check.fix
    step = "dns" if code == "dns-resolution-failed" else "tcp"
    assert any(c.id.startswith(f"{step}:{host}") and c.code == code for c in report.checks)
    assert next(c for c in report.checks if c.id.startswith("xet-token:")).status == "pass"
    assert not report.ok and report.verdict.startswith(f"The {words} {host}"), report.verdict
    assert f"[{code}]" in report.verdict
    assert " ".join(check.fix.split()) in " ".join(render_report(report).split())


def test_a_cas_that_never_answers_keeps_sources_probe_and_the_doctor_within_their_bounds(
        healthy: Mirror, tmp_path: Path) -> None:
    """The CAS accepts and never answers its reconstruction: ``sources --probe``
    ends within its Xet bound (5 probe time-outs: 4 s) and says what stays
    unknown; the doctor's check of the CAS times out within its own time-outs.
    The bounds add what the same command costs here when nothing hangs."""
    started = time.monotonic()
    _probe(healthy, tmp_path)
    baseline = time.monotonic() - started
    healthy.faults.latency(8.0, predicate=kind("reconstruction"))
    started = time.monotonic()
    xet = _probe(healthy, tmp_path)
    elapsed = time.monotonic() - started
    assert elapsed < baseline + 4.0 + 1.0, (elapsed, baseline)
    assert [(h["role"], h["ok"]) for h in xet["hosts"]] == [("token", True), ("cas", False)] and xet["ok"] is False
    cas = xet["hosts"][1]
    assert cas["code"] == "response-timeout" and "reconstruction request" in cas["summary"]
    assert "does not answer in time" in cas["summary"] and cas["fix"]
    assert xet["note"] == "the xorb hosts are not known: no answer within 4.0s"
    healthy.faults.latency(8.0, predicate=kind("reconstruction"))
    started = time.monotonic()
    report = run_doctor(settings_for(tmp_path, [healthy.url]), repo=REPO, options=options_for(tmp_path))
    assert time.monotonic() - started < 3.0 + 1.0  # options_for: 1 s per read, 3 s in all
    check = next(c for c in report.checks if c.id.startswith("xet-cas:"))
    assert (check.status, check.code) == ("fail", "response-timeout")
    assert "does not answer in time" in check.summary and not report.ok


@pytest.mark.parametrize("route", ["xet-read-token", "reconstruction", "xorb"])
def test_a_xet_host_that_answers_403_is_named_with_the_fix_by_the_doctor(
        route: str, healthy: Mirror, tmp_path: Path) -> None:
    """A 403 (a token that may not read, a signed URL refused for a wrong
    clock): the doctor asks each host for real, up to one byte of a xorb."""
    healthy.faults.fail(403, times=None, predicate=kind(route))
    report = run_doctor(settings_for(tmp_path, [healthy.url]), repo=REPO, options=options_for(tmp_path))
    role = {"xet-read-token": "token", "reconstruction": "cas", "xorb": "xorb"}[route]
    check = next(c for c in report.checks if c.id.startswith(f"xet-{role}:"))
    assert (check.status, check.code) == ("fail", "http-error") and "HTTP 403" in check.summary
    assert "HF_TOKEN" in check.fix and "HF_HUB_DISABLE_XET=1" in check.fix
    assert not report.ok and f"xet-{role}" in {c.id.split(":")[0] for c in report.checks if c.status == "fail"}
    if route == "xet-read-token":
        xet = _probe(healthy, tmp_path)
        token = xet["hosts"][0]
        assert (token["role"], token["ok"], token["code"]) == ("token", False, "unauthorized")
        assert "HTTP 403" in token["summary"] and "HF_TOKEN" in token["fix"]


@pytest.mark.parametrize("how", ["--offline", "HF_HUB_OFFLINE=1"])
def test_sources_probe_offline_sends_nothing(how: str, tmp_path: Path) -> None:
    with BlackHole() as hole:
        args = ["sources", "--probe", "--json", "--repo", REPO] + (["--offline"] if how == "--offline" else [])
        env = {"HF_HUB_OFFLINE": "1"} if how != "--offline" else None
        res = run_cli(args, home=tmp_path / "home", endpoint=hole.url, env=env)
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        assert hole.connections() == 0
    assert "probe" not in out["sources"][0] and "xet" not in out["sources"][0]
    assert out["probe"] == "offline: not probed"


@pytest.mark.skipif(bool(netns_unavailable()), reason=str(netns_unavailable()))
def test_sources_probe_offline_sends_not_one_packet_to_the_default_sources(tmp_path: Path) -> None:
    """With huggingface.co as the source (the default), in a network namespace
    that counts every packet that tries to leave (tests/support/netns.py)."""
    env = clean_env(tmp_path / "home", extra={"HF_HUB_OFFLINE": "1"})
    result = run_isolated([sys.executable, "-m", "qwenhome", "sources", "--probe"], env, cwd=tmp_path, timeout=60)
    assert result.returncode == 0 and "not probed" in result.output, result.output
    assert result.packets == 0 and not result.remote_calls, result.leaks()
