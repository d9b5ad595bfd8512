"""TLS and HTTP: an untrusted certificate (issuer shown), a TLS server that
hangs, a clock two hours off, a captive portal answering HTML, a failing API,
and the whole path against the project's own mirror with a CDN redirect."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from qwenhome.doctor import run_doctor
from qwenhome.mirror import FolderBackend, HashCache, MirrorServer
from tests.doctor_support.dns_server import DnsServer
from tests.doctor_support.hub import FakeHub
from tests.doctor_support.setup import options_for, settings_for
from tests.doctor_support.sockets import Blackhole, Slammer
from tests.support.repos import GeneratedRepo


def test_untrusted_certificate_names_issuer_and_subject(tmp_path: Path) -> None:
    ca = trustme.CA(organization_name="Intercepting Proxy Inc")
    with FakeHub(tls=ca) as hub:
        report = run_doctor(settings_for(tmp_path, [hub.url]), options=options_for(tmp_path))
    check = next(c for c in report.checks if c.id == "tls:127.0.0.1")
    assert (check.status, check.code) == ("fail", "tls-verification-failed")
    assert "Intercepting Proxy Inc" in check.details["issuer"]
    assert "Intercepting Proxy Inc" in check.summary
    assert "SSL_CERT_FILE" in check.fix


def test_certificate_from_a_trusted_ca_passes_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with FakeHub(tls=ca) as hub:
        report = run_doctor(settings_for(tmp_path, [hub.url]), repo="Org/Model",
                            options=options_for(tmp_path, ca_file=ca_file))
    by_id = {c.id: c for c in report.checks}
    assert by_id["tls:127.0.0.1"].status == "pass"
    assert by_id["api:hf"].status == "pass"


def test_a_ca_bundle_a_pull_cannot_load_is_reported_and_tls_still_checked(tmp_path: Path) -> None:
    """CURL_CA_BUNDLE names a file that is not there: pulls would fail with
    ca-bundle-invalid, so the doctor says so (and checks TLS with the system's
    certificates meanwhile)."""
    missing = tmp_path / "gone" / "ca.pem"
    with FakeHub(tls=trustme.CA()) as hub:
        report = run_doctor(settings_for(tmp_path, [hub.url], {"CURL_CA_BUNDLE": str(missing)}),
                            options=options_for(tmp_path))
    by_id = {c.id: c for c in report.checks}
    check = by_id["ca-bundle"]
    assert (check.status, check.code) == ("fail", "ca-bundle-invalid")
    assert str(missing) in check.summary and "CURL_CA_BUNDLE" in check.summary
    assert "CURL_CA_BUNDLE" in check.fix
    assert by_id["tls:127.0.0.1"].code == "tls-verification-failed"


def test_tls_handshake_that_never_completes_is_response_timeout(tmp_path: Path) -> None:
    with Blackhole() as hole:
        report = run_doctor(settings_for(tmp_path, [f"https://127.0.0.1:{hole.port}"]),
                            options=options_for(tmp_path))
    check = next(c for c in report.checks if c.id == "tls:127.0.0.1")
    assert (check.status, check.code) == ("fail", "response-timeout")
    assert "TLS handshake" in check.summary


def test_server_date_two_hours_off_is_clock_skew(tmp_path: Path) -> None:
    with FakeHub(date_offset=-7200) as hub:
        report = run_doctor(settings_for(tmp_path, [hub.url]), repo="Org/Model",
                            options=options_for(tmp_path))
    check = next(c for c in report.checks if c.id == "clock:127.0.0.1")
    assert (check.status, check.code) == ("fail", "clock-skew")
    assert "2.0 h ahead" in check.summary
    assert "timedatectl set-ntp true" in check.fix


def test_clock_within_a_minute_passes(tmp_path: Path) -> None:
    with FakeHub(date_offset=20) as hub:
        report = run_doctor(settings_for(tmp_path, [hub.url]), repo="Org/Model",
                            options=options_for(tmp_path))
    assert next(c for c in report.checks if c.id == "clock:127.0.0.1").status == "pass"


def test_captive_portal_html_is_not_a_hub(tmp_path: Path) -> None:
    with FakeHub("html") as hub:
        report = run_doctor(settings_for(tmp_path, [hub.url]), options=options_for(tmp_path))
    check = next(c for c in report.checks if c.id == "api:hf")
    assert (check.status, check.code) == ("fail", "not-a-hub")
    assert "HTML" in check.summary and "Hotel WiFi Login" in check.summary
    assert "log in" in check.fix


def test_server_error_is_http_error_with_status(tmp_path: Path) -> None:
    with FakeHub("status", status=503) as hub:
        report = run_doctor(settings_for(tmp_path, [hub.url]), options=options_for(tmp_path))
    check = next(c for c in report.checks if c.id == "api:hf")
    assert (check.status, check.code) == ("fail", "http-error")
    assert "503" in check.summary and check.details["status"] == "503"
    assert "another source" in check.fix


def test_modelscope_source_uses_its_own_api(tmp_path: Path) -> None:
    with FakeHub("modelscope") as hub:
        report = run_doctor(settings_for(tmp_path, [f"modelscope:{hub.url}"]), repo="Org/Model",
                            options=options_for(tmp_path))
        paths = [p for _, p, _ in hub.requests]
    assert next(c for c in report.checks if c.id == "api:modelscope").status == "pass"
    assert any(p.startswith("/api/v1/models/Org/Model/repo/files?Revision=master") for p in paths)
    assert next(c for c in report.checks if c.id == "resolve:modelscope").status == "pass"


def test_redirect_host_of_a_real_file_is_discovered_and_checked(
        tmp_path: Path, repos_root: Path, small_repo: GeneratedRepo, hash_cache: HashCache) -> None:
    mirror = MirrorServer(FolderBackend(repos_root, hashes=hash_cache), redirect_lfs=True,
                          cdn_host="cdn.qwenhome.test").start()
    try:
        with DnsServer({"cdn.qwenhome.test": ["127.0.0.1"]}) as dns:
            report = run_doctor(settings_for(tmp_path, [mirror.url]), repo="Org/Small",
                                options=options_for(tmp_path, [dns.address]))
    finally:
        mirror.stop()
    by_id = {c.id: c for c in report.checks}
    assert by_id["api:hf"].status == "pass"
    assert "cdn.qwenhome.test" in by_id["resolve:hf"].summary
    assert by_id["dns:cdn.qwenhome.test"].status == "pass"
    assert by_id["http:cdn.qwenhome.test"].status == "pass"
    assert report.ok, [c for c in report.checks if c.status == "fail"]


def test_https_url_on_a_plain_http_server_is_tls_handshake_failed(tmp_path: Path) -> None:
    with FakeHub() as hub:
        report = run_doctor(settings_for(tmp_path, [f"https://127.0.0.1:{hub.port}"]),
                            options=options_for(tmp_path))
    check = next(c for c in report.checks if c.id == "tls:127.0.0.1")
    assert (check.status, check.code) == ("fail", "tls-handshake-failed")
    assert "plain HTTP" in check.summary and "scheme" in check.fix


def test_connection_closed_during_tls_handshake_is_connection_dropped(tmp_path: Path) -> None:
    with Slammer() as slam:
        report = run_doctor(settings_for(tmp_path, [f"https://127.0.0.1:{slam.port}"]),
                            options=options_for(tmp_path))
    check = next(c for c in report.checks if c.id == "tls:127.0.0.1")
    assert (check.status, check.code) == ("fail", "connection-dropped")
    assert "HTTPS_PROXY" in check.fix


def test_connection_closed_without_an_http_answer_is_connection_dropped(tmp_path: Path) -> None:
    with Slammer() as slam:
        report = run_doctor(settings_for(tmp_path, [slam.url]), options=options_for(tmp_path))
    check = next(c for c in report.checks if c.id == "api:hf")
    assert (check.status, check.code) == ("fail", "connection-dropped")


def test_redirect_to_a_login_page_is_not_a_hub(tmp_path: Path) -> None:
    with FakeHub("portal") as hub:
        report = run_doctor(settings_for(tmp_path, [hub.url]), options=options_for(tmp_path))
    check = next(c for c in report.checks if c.id == "api:hf")
    assert (check.status, check.code) == ("fail", "not-a-hub")
    assert "login.portal.test" in check.summary and "log in" in check.fix


@pytest.mark.parametrize(("status", "fix_words"), [
    (401, "HF_TOKEN"), (403, "HF_TOKEN"), (404, "add another source"), (429, "wait"), (500, "try again later"),
])
def test_api_status_is_http_error_with_the_fix_for_that_status(tmp_path: Path, status: int, fix_words: str) -> None:
    with FakeHub("status", status=status) as hub:
        report = run_doctor(settings_for(tmp_path, [hub.url]), repo="Org/Model", options=options_for(tmp_path))
    check = next(c for c in report.checks if c.id == "api:hf")
    assert (check.status, check.code) == ("fail", "http-error")
    assert str(status) in check.summary and fix_words in check.fix


def test_download_without_repo_commit_header_warns_not_a_hub(tmp_path: Path) -> None:
    with FakeHub("no-commit") as hub:
        report = run_doctor(settings_for(tmp_path, [hub.url]), repo="Org/Model", options=options_for(tmp_path))
    check = next(c for c in report.checks if c.id == "resolve:hf")
    assert (check.status, check.code) == ("warn", "not-a-hub")
    assert "X-Repo-Commit" in check.summary


def test_hf_endpoint_is_the_source_checked_and_named_in_fixes(tmp_path: Path) -> None:
    with FakeHub("html") as hub:
        report = run_doctor(settings_for(tmp_path, env={"HF_ENDPOINT": hub.url}), options=options_for(tmp_path))
        assert hub.requests  # the endpoint was asked, not huggingface.co
    check = next(c for c in report.checks if c.id == "api:hf")
    assert check.code == "not-a-hub" and "HF_ENDPOINT" in check.fix
    assert not any("xethub" in c.id for c in report.checks)  # Xet hosts belong to huggingface.co only


def test_token_goes_to_the_api_host_and_never_to_the_cdn(tmp_path: Path) -> None:
    with FakeHub() as cdn, DnsServer({"cdn.qwenhome.test": ["127.0.0.1"]}) as dns:
        with FakeHub(redirect_to=f"http://cdn.qwenhome.test:{cdn.port}/signed?x=1") as hub:
            config = tmp_path / "home" / "qwenhome" / "config.toml"
            config.parent.mkdir(parents=True)
            config.write_text(f'[[sources]]\nname = "hub"\nurl = "{hub.url}"\ntoken = "hf_SECRET"\n')
            report = run_doctor(settings_for(tmp_path), repo="Org/Model",
                                options=options_for(tmp_path, [dns.address]))
            api_headers = hub.requests[0][2]
        assert cdn.requests and all("Authorization" not in h for _, _, h in cdn.requests)
    assert api_headers.get("Authorization") == "Bearer hf_SECRET"
    assert next(c for c in report.checks if c.id == "http:cdn.qwenhome.test").status == "pass"
    assert "SECRET" not in str(report.to_dict())


def test_default_repository_missing_on_a_mirror_only_warns(tmp_path: Path) -> None:
    with FakeHub("status", status=404) as hub:
        default = run_doctor(settings_for(tmp_path, [hub.url]), options=options_for(tmp_path))
        chosen = run_doctor(settings_for(tmp_path, [hub.url]), repo="Org/Wanted", options=options_for(tmp_path))
    assert next(c for c in default.checks if c.id == "api:hf").status == "warn"
    assert default.ok
    assert next(c for c in chosen.checks if c.id == "api:hf").status == "fail"
    assert not chosen.ok
