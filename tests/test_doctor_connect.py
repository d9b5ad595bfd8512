"""TCP: refused, connect time-out, a host that accepts and never answers,
and IPv6 that resolves but does not connect while IPv4 does."""

from __future__ import annotations

import socket
from pathlib import Path

from qwenhome.doctor import run_doctor
from tests.doctor_support.dns_server import DnsServer
from tests.doctor_support.hub import FakeHub
from tests.doctor_support.setup import options_for, settings_for
from tests.doctor_support.sockets import Blackhole, FullBacklog, closed_port


def test_closed_port_is_connection_refused_naming_the_port(tmp_path: Path) -> None:
    port = closed_port()
    report = run_doctor(settings_for(tmp_path, [f"http://127.0.0.1:{port}"]), options=options_for(tmp_path))
    check = next(c for c in report.checks if c.id == f"tcp:127.0.0.1:{port}")
    assert (check.status, check.code) == ("fail", "connection-refused")
    assert f"port {port}" in check.summary
    assert "check the port" in check.fix
    assert next(c for c in report.checks if c.id == "api:hf").status == "skip"
    assert report.exit_code == 1


def test_dropped_syn_is_connection_timeout_with_firewall_fix(tmp_path: Path) -> None:
    with FullBacklog() as full:
        report = run_doctor(settings_for(tmp_path, [f"http://127.0.0.1:{full.port}"]),
                            options=options_for(tmp_path))
    check = next(c for c in report.checks if c.id == f"tcp:127.0.0.1:{full.port}")
    assert (check.status, check.code) == ("fail", "connection-timeout")
    assert "firewall" in check.fix and "HTTPS_PROXY" in check.fix


def test_host_that_accepts_and_never_answers_is_response_timeout(tmp_path: Path) -> None:
    with Blackhole() as hole:
        report = run_doctor(settings_for(tmp_path, [hole.url]), options=options_for(tmp_path))
    assert next(c for c in report.checks if c.id.startswith("tcp:")).status == "pass"
    check = next(c for c in report.checks if c.id == "api:hf")
    assert (check.status, check.code) == ("fail", "response-timeout")
    assert "did not answer" in check.summary
    assert "another source" in check.fix


def test_ipv6_that_does_not_connect_while_ipv4_does_is_reported(tmp_path: Path) -> None:
    # The server listens on 127.0.0.1 only; the name also has ::1, where that port is closed.
    with FakeHub() as hub, DnsServer({"dual.qwenhome.test": ["127.0.0.1", "::1"]}) as dns:
        settings = settings_for(tmp_path, [f"http://dual.qwenhome.test:{hub.port}"])
        report = run_doctor(settings, repo="Org/Model", options=options_for(tmp_path, [dns.address]))
    check = next(c for c in report.checks if c.id == "ipv6:dual.qwenhome.test")
    assert (check.status, check.code) == ("warn", "ipv6-unreachable")
    assert "::1" in check.summary
    assert "gai.conf" in check.fix
    assert next(c for c in report.checks if c.id == "api:hf").status == "pass"
    assert report.ok  # a warning does not fail the run


def test_ipv6_only_connecting_host_is_not_flagged(tmp_path: Path) -> None:
    v6 = socket.socket(socket.AF_INET6)
    v6.bind(("::1", 0))
    v6.listen(8)
    port = v6.getsockname()[1]
    try:
        with DnsServer({"six.qwenhome.test": ["::1"]}) as dns:
            report = run_doctor(settings_for(tmp_path, [f"http://six.qwenhome.test:{port}"]),
                                options=options_for(tmp_path, [dns.address]))
    finally:
        v6.close()
    assert next(c for c in report.checks if c.id == f"tcp:six.qwenhome.test:{port}").status == "pass"
    assert not report.by_code("ipv6-unreachable")
