"""The doctor's one-line verdict, first in the text and ``verdict`` in JSON:
"No internet access: …" only when nothing on the internet answers, "ok" when
all is well, else the first failing cause. DNS and HTTP servers on 127.0.0.1
stand in for the world (public names are resolved by them, never for real)."""

from __future__ import annotations

import json
from pathlib import Path

from qwenhome.doctor import DoctorReport, render_report, run_doctor
from qwenhome.doctor.verdict import is_public_host
from tests.doctor_support.dns_server import DnsServer
from tests.doctor_support.hub import FakeHub
from tests.doctor_support.setup import options_for, settings_for
from tests.doctor_support.sockets import closed_port


def _first_line(report: DoctorReport) -> str:
    text = render_report(report)
    assert json.loads(json.dumps(report.to_dict()))["verdict"] == report.verdict
    return text.splitlines()[0]


def test_no_resolver_answering_for_the_hub_and_xet_hosts_is_no_internet_access(tmp_path: Path) -> None:
    with DnsServer(mode="silent") as system, DnsServer(mode="silent") as direct:
        opts = options_for(tmp_path, [direct.address], system_dns=[system.address])
        report = run_doctor(settings_for(tmp_path, ["https://huggingface.co"]), options=opts)
    line = _first_line(report)
    assert line.startswith("No internet access: no DNS server answers for huggingface.co"), line
    assert "cas-server.xethub.hf.co" in line and "qwenhome launch --offline" in line
    assert "huggingface.co" in system.queries  # the system resolver was asked, and the direct one too
    assert "huggingface.co" in direct.queries


def test_public_hosts_that_resolve_but_never_connect_are_no_internet_access(tmp_path: Path) -> None:
    port = closed_port()
    names = ["huggingface.co", "cas-server.xethub.hf.co"]
    with DnsServer({n: ["127.0.0.1"] for n in names}) as dns:
        opts = options_for(tmp_path, [dns.address], xet_hosts=("cas-server.xethub.hf.co",))
        report = run_doctor(settings_for(tmp_path, [f"https://huggingface.co:{port}"]), options=opts)
    line = _first_line(report)
    assert line.startswith("No internet access: no connection gets through to huggingface.co"), line


def test_a_lan_mirror_that_is_down_is_named_not_called_no_internet(tmp_path: Path) -> None:
    with DnsServer(mode="silent") as silent:
        opts = options_for(tmp_path, [silent.address])
        report = run_doctor(settings_for(tmp_path, ["http://mirror.lan:8090"]), options=opts)
    line = _first_line(report)
    assert line.startswith("No resolver answered for mirror.lan"), line
    assert "[dns-resolution-failed]" in line


def test_a_resolver_that_says_a_public_host_does_not_exist_is_filtered_dns(tmp_path: Path) -> None:
    with DnsServer({}) as nx:
        opts = options_for(tmp_path, [nx.address], xet_hosts=())
        report = run_doctor(settings_for(tmp_path, ["https://huggingface.co"]), options=opts)
    line = _first_line(report)
    assert not line.startswith("No internet access"), line
    assert "filtered or hijacked" in line, line


def test_everything_working_is_ok(tmp_path: Path) -> None:
    with FakeHub() as hub, DnsServer({"hub.qwenhome.test": ["127.0.0.1"]}) as dns:
        settings = settings_for(tmp_path, [f"http://hub.qwenhome.test:{hub.port}"])
        report = run_doctor(settings, repo="Org/Model", options=options_for(tmp_path, [dns.address]))
    assert report.ok
    assert _first_line(report) == "ok" or _first_line(report).startswith("ok, but: "), render_report(report)


def test_offline_is_ok_and_says_the_network_was_not_checked(tmp_path: Path) -> None:
    report = run_doctor(settings_for(tmp_path, ["https://huggingface.co"]), options=options_for(tmp_path),
                        offline=True)
    assert _first_line(report).startswith("ok (--offline: sources, DNS, proxies and TLS were not checked)")


def test_public_means_on_the_internet() -> None:
    for host in ("huggingface.co", "cas-bridge.xethub.hf.co", "8.8.8.8", "[2606:4700::1111]"):
        assert is_public_host(host), host
    for host in ("localhost", "127.0.0.1", "10.0.0.5", "192.168.1.2", "::1", "mirror", "mirror.lan",
                 "hub.qwenhome.test", "nas.local", "fd00::1"):
        assert not is_public_host(host), host
