"""The doctor's small parts: certificate names, proxy rules, resolv.conf,
resolver addresses, the report's JSON and table."""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path

import trustme

from qwenhome.doctor import Check, DoctorReport, FixApplied, render_report
from qwenhome.doctor.dnscheck import getaddrinfo_resolver, parse_server, read_nameservers
from qwenhome.doctor.proxy import bypassed, proxy_for
from qwenhome.doctor.x509 import issuer_and_subject


def test_issuer_and_subject_are_read_from_der() -> None:
    ca = trustme.CA(organization_name="Example Proxy Ltd")
    cert = ca.issue_cert("hub.example.test")
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    issuer, subject = issuer_and_subject(der)
    # The same names as cryptography reads them (it is installed with trustme, not needed by us).
    from cryptography import x509

    parsed = x509.load_der_x509_certificate(der)
    assert sorted(issuer.split(", ")) == sorted(parsed.issuer.rfc4514_string().split(","))
    assert sorted(subject.split(", ")) == sorted(parsed.subject.rfc4514_string().split(","))
    assert "O=Example Proxy Ltd" in issuer and "Example Proxy Ltd" not in subject
    assert issuer_and_subject(b"\x30\x03garbage") == ("?", "?")


def test_proxy_rules_follow_the_http_client() -> None:
    env = {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:2", "NO_PROXY": "internal.test,.corp"}
    proxy = proxy_for(env, "https", "huggingface.co")
    assert proxy is not None and (proxy.host, proxy.port) == ("lower", 1)  # lower case first
    assert proxy_for(env, "https", "internal.test") is None
    assert proxy_for(env, "https", "mirror.corp") is None and bypassed(env, "https", "mirror.corp")
    assert proxy_for(env, "http", "huggingface.co") is None  # no http proxy, no ALL_PROXY
    assert proxy_for({"ALL_PROXY": "http://all:3"}, "http", "x.test") is not None
    with_auth = proxy_for({"HTTPS_PROXY": "http://u:p%40ss@p.test:8080"}, "https", "x.test")
    assert with_auth is not None and with_auth.auth == ("u", "p@ss") and "p@ss" not in with_auth.display


def test_nameservers_are_read_from_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# generated\nsearch lan\nnameserver 10.255.255.254 # wsl\nnameserver ::1\noptions edns0\n")
    assert read_nameservers(conf) == ["10.255.255.254", "::1"]
    assert read_nameservers(tmp_path / "missing") == []


def test_resolver_addresses_take_an_optional_port() -> None:
    assert parse_server("1.1.1.1") == ("1.1.1.1", 53)
    assert parse_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_server("[::1]:5353") == ("::1", 5353)


def test_system_resolver_returns_ip_literals_without_dns() -> None:
    assert getaddrinfo_resolver("127.0.0.1", 80, 1.0) == [(socket.AF_INET, "127.0.0.1")]


def test_report_json_matches_the_schema_and_exit_code_follows_failures() -> None:
    checks = (
        Check("dns:a", "pass", "a resolves"),
        Check("tcp:a:443", "fail", "refused", "connection-refused", "start it", "a"),
        Check("wsl-resolv-conf", "skip", "not WSL"),
    )
    report = DoctorReport(checks, (FixApplied("write-env-sh", "wrote", "/h/env.sh"),))
    doc = json.loads(json.dumps(report.to_dict()))
    assert set(doc) == {"verdict", "ok", "checks", "fixes_applied"}
    assert doc["ok"] is False and report.exit_code == 1
    assert doc["verdict"] == "Refused [connection-refused]"  # the first failing cause
    assert doc["checks"][1] == {"id": "tcp:a:443", "status": "fail", "code": "connection-refused",
                                "summary": "refused", "fix": "start it", "host": "a"}
    assert doc["checks"][0]["code"] is None
    assert doc["fixes_applied"] == [{"id": "write-env-sh", "summary": "wrote", "path": "/h/env.sh"}]
    table = render_report(report)
    assert "FAIL  tcp:a:443" in table and "fix: start it" in table and "write-env-sh" in table
    assert table.splitlines()[0] == doc["verdict"]
    assert DoctorReport(checks[:1]).exit_code == 0
