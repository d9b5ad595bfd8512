"""The one transport (``qwenhome.net``), on real servers on 127.0.0.1.

A caller gives the client its own transport, as httpx allows: one that
records the connections a pull makes, one that refuses them. TLS trusts the
CA bundle that SSL_CERT_FILE, REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE names
(first set wins), in the client and in the event loop alike, and a bundle
that cannot be loaded is a configuration error naming its variable."""

from __future__ import annotations

import errno
import hashlib
import http.client
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import trustme

from qwenhome.config import Settings, Source, load_settings
from qwenhome.errors import QwenhomeError
from qwenhome.hub import HubClient
from qwenhome.mirror import CannedResponse, FolderBackend, HashCache, RequestInfo
from qwenhome.net import HttpClient, Origin, Transport
from qwenhome.pull import pull
from qwenhome.store import RepoRef
from tests.support.faults import Faults
from tests.support.mirror import Mirror, start_mirror
from tests.support.repos import GeneratedRepo
from tests.support.tls_front import TlsFront
from tests.test_pull import assert_snapshot_matches
from tests.test_transfer_loop import FAST

SMALL = RepoRef.parse("Org/Small")


class Recording(Transport):
    """The default transport, noting every connection it makes. ``direct``
    False: the engine's event loop may not dial by itself, so every
    connection of a pull comes here."""

    def __init__(self, env: dict[str, str] | None = None, *, direct: bool = True) -> None:
        super().__init__(env)
        self.dialled: list[Origin] = []
        self._direct = direct

    def direct(self, origin: Origin) -> bool:
        return self._direct and super().direct(origin)

    def connect(self, origin: Origin, timeout: float) -> http.client.HTTPConnection:
        self.dialled.append(origin)
        return super().connect(origin, timeout)


class Refusing(Transport):
    def connect(self, origin: Origin, timeout: float) -> http.client.HTTPConnection:
        raise ConnectionRefusedError(errno.ECONNREFUSED, "refused by the test's transport")


class RedirectFiles(Faults):
    """Answers every file download with a 302 to the same path on ``to``."""

    def __init__(self, to: str) -> None:
        super().__init__()
        self.to = to

    def on_request(self, info: RequestInfo) -> CannedResponse | None:
        if info.route_kind == "resolve":
            return CannedResponse(302, b"", {"Location": self.to + info.target})
        return super().on_request(info)


@pytest.fixture
def hub_and_cdn(repos_root: Path, hash_cache: HashCache, small_repo: GeneratedRepo) -> Iterator[tuple[Mirror, Mirror]]:
    """A hub whose file downloads are redirected to a CDN on another port."""
    with start_mirror(FolderBackend(repos_root, hashes=hash_cache)) as cdn, \
            start_mirror(FolderBackend(repos_root, hashes=hash_cache), faults=RedirectFiles(cdn.url)) as hub:
        yield hub, cdn


def test_an_injected_transport_makes_every_connection_of_a_redirected_request(
        hub_and_cdn: tuple[Mirror, Mirror], small_repo: GeneratedRepo) -> None:
    hub, cdn = hub_and_cdn
    transport = Recording()
    client = HttpClient(transport=transport)
    resp, body = client.get_bytes(f"{hub.url}/Org/Small/resolve/main/config.json")
    assert resp.status == 200 and resp.url.startswith(cdn.url)
    assert hashlib.sha256(body).hexdigest() == small_repo.files["config.json"].sha256
    assert transport.dialled == [Origin.of(hub.url), Origin.of(cdn.url)]
    client.get_bytes(f"{hub.url}/Org/Small/resolve/main/config.json")
    assert len(transport.dialled) == 2, "the second request reuses both kept-alive connections"


def test_a_whole_pull_goes_through_an_injected_transport(
        qwen_home: Path, hub_and_cdn: tuple[Mirror, Mirror], small_repo: GeneratedRepo) -> None:
    hub, cdn = hub_and_cdn
    transport = Recording(direct=False)
    settings = load_settings({"HOME": str(qwen_home.parent)}, home=str(qwen_home), sources=[hub.url])
    result = pull(settings, SMALL, http=HttpClient(settings.timeouts, transport=transport), config=FAST)
    assert_snapshot_matches(qwen_home, small_repo)
    assert set(transport.dialled) == {Origin.of(hub.url), Origin.of(cdn.url)}
    assert result.stats.get("threaded_files") == len(small_repo.files), result.stats
    assert cdn.faults.records(path="model.safetensors", method="GET"), "the file came from the CDN"


def test_a_transport_that_refuses_gives_connection_refused_and_sends_nothing(mirror: Mirror) -> None:
    client = HubClient(Source("s", "hf", mirror.url), HttpClient(transport=Refusing()))
    with pytest.raises(QwenhomeError) as info:
        client.manifest(SMALL)
    assert info.value.code == "connection-refused"
    assert f"127.0.0.1:{mirror.server.port}" in info.value.message
    assert mirror.faults.records(settle=0.2) == []


# -- the CA bundle -------------------------------------------------------------------------
@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def front(mirror: Mirror, ca: trustme.CA) -> Iterator[TlsFront]:
    with TlsFront(mirror.server.port, ca) as f:
        yield f


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def settings_with(home: Path, url: str, **env: str) -> Settings:
    return load_settings({"HOME": str(home.parent), **env}, home=str(home), sources=[url])


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_each_ca_bundle_variable_is_trusted_by_the_probe_the_client_and_the_event_loop(
        qwen_home: Path, front: TlsFront, ca_file: Path, small_repo: GeneratedRepo, variable: str) -> None:
    result = pull(settings_with(qwen_home, front.url, **{variable: str(ca_file)}), SMALL,
                  config=replace(FAST, connections=2))
    assert_snapshot_matches(qwen_home, small_repo)
    assert result.stats.get("threaded_files") == 0, "the event loop made its own handshakes"
    assert front.failed_handshakes == 0


def test_ssl_cert_file_wins_over_the_other_ca_variables(mirror: Mirror, front: TlsFront, ca_file: Path,
                                                        tmp_path: Path) -> None:
    env = {"SSL_CERT_FILE": str(ca_file), "REQUESTS_CA_BUNDLE": str(tmp_path / "missing.pem"),
           "CURL_CA_BUNDLE": str(tmp_path / "missing.pem")}
    resp, _ = HttpClient(env=env).get_bytes(f"{front.url}/api/models/Org/Small")
    assert resp.status == 200


@pytest.mark.skipif(shutil.which("openssl") is None, reason="names the certificate by its subject hash")
def test_a_ca_folder_is_trusted_as_requests_takes_it(front: TlsFront, ca_file: Path, tmp_path: Path) -> None:
    """REQUESTS_CA_BUNDLE may name a folder of certificates named by their
    subject hash (``c_rehash``), as requests allows."""
    folder = tmp_path / "certs"
    folder.mkdir()
    subject_hash = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(ca_file)], check=True,
                                  capture_output=True, text=True).stdout.strip()
    (folder / f"{subject_hash}.0").write_bytes(ca_file.read_bytes())
    resp, _ = HttpClient(env={"REQUESTS_CA_BUNDLE": str(folder)}).get_bytes(f"{front.url}/api/models/Org/Small")
    assert resp.status == 200


def test_a_ca_bundle_that_cannot_be_loaded_names_its_variable(qwen_home: Path, front: TlsFront,
                                                              tmp_path: Path) -> None:
    missing = tmp_path / "corporate-ca.pem"
    with pytest.raises(QwenhomeError) as info:
        HttpClient(env={"REQUESTS_CA_BUNDLE": str(missing)}).get_bytes(f"{front.url}/api/models/Org/Small")
    assert info.value.code == "ca-bundle-invalid"
    assert str(missing) in info.value.message and "REQUESTS_CA_BUNDLE" in info.value.message
    assert "REQUESTS_CA_BUNDLE" in (info.value.hint or "")
    assert front.handshakes == front.failed_handshakes == 0, "nothing was sent"


def test_a_pull_with_a_ca_bundle_that_cannot_be_loaded_says_so_not_offline(qwen_home: Path, front: TlsFront,
                                                                         tmp_path: Path) -> None:
    missing = tmp_path / "corporate-ca.pem"
    with pytest.raises(QwenhomeError) as info:
        pull(settings_with(qwen_home, front.url, REQUESTS_CA_BUNDLE=str(missing)), SMALL, config=FAST)
    assert info.value.code == "ca-bundle-invalid", info.value.one_line()
    assert "REQUESTS_CA_BUNDLE" in info.value.message and "REQUESTS_CA_BUNDLE" in (info.value.hint or "")


# -- hostile numbers in a response head -----------------------------------------------------

HOSTILE_HEADS = {
    # str.isdigit() takes '²' and int() then raises ValueError
    "superscript-status": b"HTTP/1.1 \xb200 OK\r\nContent-Length: 0\r\n\r\n",
    # int() of more than 4,300 digits raises ValueError
    "huge-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
    "huge-content-range": b"HTTP/1.1 206 Partial\r\nContent-Length: 1\r\nContent-Range: bytes 0-0/"
                          + b"9" * 5000 + b"\r\n\r\nx",
    "superscript-content-range": b"HTTP/1.1 206 Partial\r\nContent-Length: 1\r\nContent-Range: bytes 0-0/\xb2"
                                 b"\r\n\r\nx",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_HEADS))
def test_hostile_numbers_in_a_response_head_are_a_bad_answer_not_a_crash(
        name: str, qwen_home: Path, repos_root: Path, hash_cache: HashCache, small_repo: GeneratedRepo) -> None:
    from tests.support.rawserver import canned_server

    with canned_server(HOSTILE_HEADS[name]) as cdn_url, \
            start_mirror(FolderBackend(repos_root, hashes=hash_cache), faults=RedirectFiles(cdn_url)) as hub:
        settings = load_settings({"HOME": str(qwen_home.parent)}, home=str(qwen_home), sources=[hub.url])
        with pytest.raises(QwenhomeError) as info:
            pull(settings, SMALL, config=replace(FAST, max_retries=1))
    assert info.value.code in {"bad-response", "size-mismatch", "server-error"}, info.value
    snapshots = qwen_home / "hub" / "models--Org--Small" / "snapshots"
    visible = {p.name for p in snapshots.rglob("*") if p.is_file()} if snapshots.exists() else set()
    assert visible <= {"empty.txt"}, "only the empty file, which needs no bytes, may be there"


def test_header_numbers_take_ascii_digits_of_sane_length_only() -> None:
    from qwenhome.errors import ProtocolError
    from qwenhome.net import ContentRange, parse_count
    from qwenhome.net.head import parse_head

    assert parse_count(" 42 ") == 42 and parse_count("0") == 0
    for bad in ["²", "4²", "-1", "+1", "1e3", "", "9" * 20, "٣"]:
        assert parse_count(bad) is None, bad
    assert ContentRange.parse("bytes 0-9/" + "9" * 5000) is None
    with pytest.raises(ProtocolError):
        parse_head("HTTP/1.1 ²00 OK\r\n\r\n".encode("latin-1"))
    head, _ = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n") or (None, 0)
    assert head is not None and head.length is None
