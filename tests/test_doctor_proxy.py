"""Proxy variables from the settings' environment: a proxy on a closed port,
a proxy that refuses CONNECT, a working proxy, and hosts that bypass it."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from qwenhome.doctor import run_doctor
from tests.doctor_support.dns_server import DnsServer
from tests.doctor_support.hub import FakeHub
from tests.doctor_support.proxy_server import ForwardProxy
from tests.doctor_support.setup import options_for, settings_for
from tests.doctor_support.sockets import closed_port


def test_proxy_on_a_closed_port_is_proxy_connection_failed(tmp_path: Path) -> None:
    port = closed_port()
    proxy = f"http://127.0.0.1:{port}"
    with FakeHub() as hub:
        env = {"HTTP_PROXY": proxy, "https_proxy": proxy}
        report = run_doctor(settings_for(tmp_path, [hub.url], env), options=options_for(tmp_path))
        assert hub.requests == []  # nothing went around the proxy
    check = next(c for c in report.checks if c.code == "proxy-connection-failed")
    assert check.status == "fail"
    assert f"127.0.0.1:{port}" in check.summary and "refused" in check.summary
    assert "`unset https_proxy HTTP_PROXY`" in check.fix  # exactly the variables that are set
    assert next(c for c in report.checks if c.id == "api:hf").status == "skip"
    assert not report.ok


def test_proxy_credentials_are_never_shown(tmp_path: Path) -> None:
    port = closed_port()
    env = {"HTTP_PROXY": f"http://alice:s3cret@127.0.0.1:{port}"}
    with FakeHub() as hub:
        report = run_doctor(settings_for(tmp_path, [hub.url], env), options=options_for(tmp_path))
    assert report.by_code("proxy-connection-failed")
    assert "s3cret" not in str(report.to_dict())


def test_working_proxy_tunnels_https_and_resolves_for_the_client(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with FakeHub(tls=ca) as hub, ForwardProxy() as proxy:
        report = run_doctor(settings_for(tmp_path, [hub.url], {"HTTPS_PROXY": proxy.url}), repo="Org/Model",
                            options=options_for(tmp_path, ca_file=ca_file))
        assert f"CONNECT 127.0.0.1:{hub.port} HTTP/1.1" in proxy.requests
    by_id = {c.id: c for c in report.checks}
    assert by_id[f"proxy:127.0.0.1:{proxy.port}"].status == "pass"
    assert by_id["tunnel:127.0.0.1"].status == "pass"
    assert by_id["dns:127.0.0.1"].status == "skip"  # the proxy resolves
    assert by_id["api:hf"].status == "pass"
    assert report.ok, [c for c in report.checks if c.status == "fail"]


def test_proxy_refusing_connect_is_proxy_connection_failed(tmp_path: Path) -> None:
    with ForwardProxy(refuse_status=403) as proxy:
        report = run_doctor(settings_for(tmp_path, ["https://127.0.0.1:9"], {"HTTPS_PROXY": proxy.url}),
                            options=options_for(tmp_path))
    check = next(c for c in report.checks if c.id == "tunnel:127.0.0.1")
    assert (check.status, check.code) == ("fail", "proxy-connection-failed")
    assert "403" in check.summary and "NO_PROXY" in check.fix


def test_plain_http_source_goes_through_the_proxy_in_absolute_form(tmp_path: Path) -> None:
    with FakeHub() as hub, ForwardProxy() as proxy:
        report = run_doctor(settings_for(tmp_path, [hub.url], {"http_proxy": proxy.url}), repo="Org/Model",
                            options=options_for(tmp_path))
        assert any(r.startswith(f"GET {hub.url}/api/models/Org/Model/revision/main") for r in proxy.requests)
    assert next(c for c in report.checks if c.id == "api:hf").status == "pass"


def test_hosts_bypassing_the_proxy_are_listed(tmp_path: Path) -> None:
    env = {"HTTP_PROXY": f"http://127.0.0.1:{closed_port()}", "NO_PROXY": "127.0.0.1,localhost"}
    with FakeHub() as hub:
        report = run_doctor(settings_for(tmp_path, [hub.url], env), repo="Org/Model",
                            options=options_for(tmp_path))
    check = next(c for c in report.checks if c.id == "proxy-bypass")
    assert check.status == "pass"
    assert "127.0.0.1" in check.summary
    assert not report.by_code("proxy-connection-failed")  # the dead proxy is not on any path
    assert report.ok


def test_bypassing_host_that_cannot_be_reached_directly_warns(tmp_path: Path) -> None:
    port = closed_port()
    with ForwardProxy() as proxy:
        env = {"HTTP_PROXY": proxy.url, "NO_PROXY": "127.0.0.1"}
        report = run_doctor(settings_for(tmp_path, [f"http://127.0.0.1:{port}"], env),
                            options=options_for(tmp_path))
    check = next(c for c in report.checks if c.id == "proxy-bypass")
    assert (check.status, check.code) == ("warn", "proxy-bypass")
    assert "remove 127.0.0.1 from NO_PROXY" in check.fix


def test_untrusted_certificate_behind_a_proxy_still_shows_its_issuer(tmp_path: Path) -> None:
    ca = trustme.CA(organization_name="Corp TLS Inspection")
    with FakeHub(tls=ca) as hub, ForwardProxy() as proxy:
        report = run_doctor(settings_for(tmp_path, [hub.url], {"HTTPS_PROXY": proxy.url}),
                            options=options_for(tmp_path))
    check = next(c for c in report.checks if c.id == "tls:127.0.0.1")
    assert (check.status, check.code) == ("fail", "tls-verification-failed")
    assert "Corp TLS Inspection" in check.details["issuer"]
    assert "Corp TLS Inspection" in check.fix and "SSL_CERT_FILE" in check.fix


def test_proxy_whose_name_does_not_resolve_is_proxy_connection_failed(tmp_path: Path) -> None:
    with DnsServer({}) as dns:
        env = {"HTTPS_PROXY": "http://proxy.qwenhome.invalid:3128"}
        report = run_doctor(settings_for(tmp_path, ["https://127.0.0.1:9"], env),
                            options=options_for(tmp_path, [dns.address]))
    check = next(c for c in report.checks if c.code == "proxy-connection-failed")
    assert "proxy.qwenhome.invalid" in check.summary and "does not exist" in check.summary
    assert check.details["cause"] == "dns-resolution-failed"
    assert "HTTPS_PROXY" in check.fix


def test_proxy_variables_come_from_the_settings_not_the_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{closed_port()}")
    with FakeHub() as hub:
        report = run_doctor(settings_for(tmp_path, [hub.url]), repo="Org/Model", options=options_for(tmp_path))
    assert not report.by_code("proxy-connection-failed")
    assert next(c for c in report.checks if c.id == "api:hf").status == "pass"
