"""DNS: a missing name, a broken system resolver next to a working one, and
DNS that does not answer at all, all against DNS servers on 127.0.0.1."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from qwenhome.doctor import run_doctor
from tests.doctor_support.dns_server import DnsServer
from tests.doctor_support.hub import FakeHub
from tests.doctor_support.setup import options_for, settings_for


def test_name_under_invalid_is_reported_as_not_existing_with_the_url_to_fix(tmp_path: Path) -> None:
    with DnsServer({}) as good:
        settings = settings_for(tmp_path, ["http://hub.qwenhome.invalid:8080"])
        report = run_doctor(settings, options=options_for(tmp_path, [good.address]))
    check = next(c for c in report.checks if c.id == "dns:hub.qwenhome.invalid")
    assert check.status == "fail"
    assert check.code == "dns-resolution-failed"
    assert "does not exist" in check.summary
    assert "spelling" in check.fix and "hub.qwenhome.invalid" in check.fix
    assert not report.ok and report.exit_code == 1


def test_broken_system_resolver_is_told_apart_from_a_missing_name(tmp_path: Path) -> None:
    with FakeHub() as hub, DnsServer({"hub.qwenhome.test": ["127.0.0.1"]}) as good, \
            DnsServer(mode="servfail") as broken:
        settings = settings_for(tmp_path, [f"http://hub.qwenhome.test:{hub.port}"])
        opts = options_for(tmp_path, [good.address], system_dns=[broken.address])
        report = run_doctor(settings, repo="Org/Model", options=opts)
    check = next(c for c in report.checks if c.id == "dns:hub.qwenhome.test")
    assert check.code == "dns-resolution-failed" and check.status == "fail"
    assert "resolver is broken" in check.summary
    assert good.address in check.summary  # the resolver that works
    assert "nameserver 127.0.0.1" in check.details["resolver"]  # the system resolver that failed
    assert "resolv.conf" in check.fix and "nameserver 127.0.0.1" in check.fix
    assert "hub.qwenhome.test" in good.queries


def test_system_resolver_that_works_resolves_and_the_source_passes(tmp_path: Path) -> None:
    with FakeHub() as hub, DnsServer({"hub.qwenhome.test": ["127.0.0.1"]}) as good:
        settings = settings_for(tmp_path, [f"http://hub.qwenhome.test:{hub.port}"])
        report = run_doctor(settings, repo="Org/Model", options=options_for(tmp_path, [good.address]))
    by_id = {c.id: c for c in report.checks}
    assert by_id["dns:hub.qwenhome.test"].status == "pass"
    assert by_id["api:hf"].status == "pass"
    assert report.ok, [c for c in report.checks if c.status == "fail"]


def test_no_resolver_answering_means_dns_is_blocked(tmp_path: Path) -> None:
    with DnsServer(mode="silent") as silent_a, DnsServer(mode="silent") as silent_b:
        settings = settings_for(tmp_path, ["http://hub.qwenhome.test:8080"])
        opts = options_for(tmp_path, [silent_a.address], system_dns=[silent_b.address])
        report = run_doctor(settings, options=opts)
    check = next(c for c in report.checks if c.id == "dns:hub.qwenhome.test")
    assert check.code == "dns-resolution-failed"
    assert "no resolver answered" in check.summary
    assert "network connection" in check.fix


def test_direct_resolvers_are_not_asked_when_the_system_resolver_works(tmp_path: Path) -> None:
    with DnsServer({"hub.qwenhome.test": ["127.0.0.1"]}) as system, DnsServer({}) as direct:
        opts = options_for(tmp_path, [direct.address], system_dns=[system.address])
        report = run_doctor(settings_for(tmp_path, ["http://hub.qwenhome.test:9"]), options=opts)
    assert next(c for c in report.checks if c.id == "dns:hub.qwenhome.test").status == "pass"
    assert system.queries and direct.queries == []


def test_a_resolver_that_crashes_is_a_dns_failure_not_a_crash(tmp_path: Path) -> None:
    def broken(host: str, port: int, timeout: float) -> list[tuple[int, str]]:
        raise RuntimeError("resolver bug")

    with DnsServer({}) as direct:
        opts = replace(options_for(tmp_path, [direct.address]), system_resolver=broken)
        report = run_doctor(settings_for(tmp_path, ["http://hub.qwenhome.test:9"]), options=opts)
    check = next(c for c in report.checks if c.id == "dns:hub.qwenhome.test")
    assert check.code == "dns-resolution-failed" and check.details["failure"] == "nxdomain"
