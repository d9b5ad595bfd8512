"""Every error code qwenhome can raise is asserted by some test, and the codes
of the Hub protocol and the transport are raised here for real: the server
answers 401/403/429/5xx, redirects badly, or speaks plain HTTP to TLS; a lock
is held; a snapshot is broken. Exit codes and the free-space check are in
``test_exit_codes.py``."""

from __future__ import annotations

import ast
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from qwenhome.config import Settings, Source, Timeouts, load_settings
from qwenhome.errors import (
    AuthError,
    ConnectError,
    EntryNotFoundError,
    LockTimeoutError,
    ProtocolError,
    ServerError,
)
from qwenhome.net import HttpClient
from qwenhome.pull import METADATA_ATTEMPTS, pull
from qwenhome.store import RepoRef, Store
from qwenhome.transfer import EngineConfig
from qwenhome.transfer.engine import Candidate, FileJob, TransferEngine
from qwenhome.transfer.retry import Backoff
from tests.support.cli import RunCli
from tests.support.codes import asserted, asserted_in, raisable
from tests.support.mirror import Mirror
from tests.support.repos import GeneratedRepo

ROOT = Path(__file__).resolve().parents[1]
REVISION = "/api/models/Org/Small/revision/main"
WEIGHTS = "model.safetensors"
# One connection: each request the server logs is one attempt of the client.
ONE = EngineConfig(connections=1, stall_timeout=2.0, backoff=Backoff(base=0.01, cap=0.05), max_retries=2)


def settings_for(home: Path, url: str, timeouts: Timeouts | None = None) -> Settings:
    settings = load_settings({"HOME": str(home.parent)}, home=str(home), sources=[url])
    return settings if timeouts is None else replace(settings, timeouts=timeouts)


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


# -- the meta-test -------------------------------------------------------------------

def test_the_code_finder_counts_asserts_not_mentions() -> None:
    tree = ast.parse('''
# assert err.code == "in-a-comment"
def test_x(res, info, body):
    "assert '--error[in-a-docstring]--'"
    x = "in-a-string"
    assert info.value.code == "by-attribute"
    assert body["error"]["code"] in ("by-key", "by-key-too")
    assert res.stderr.startswith("error[by-line]:")
    assert body == {"code": "by-dict"}
    assert (res.returncode, info.value.code) == (4, "by-tuple")
    assert res.returncode == EXIT_NETWORK and proc.wait(timeout=5) == 130
    assert "in-a-string" not in res.stderr

@pytest.mark.parametrize("code", ["by-param"])
def test_y(code, err):
    assert err.code == code

@pytest.mark.parametrize(("status", "code"), [(1, "by-param-line")])
def test_z(status, code, res):
    assert res.stderr.startswith(f"error[{code}]:")
''')
    names = {"in-a-comment", "in-a-docstring", "in-a-string", "by-attribute", "by-key", "by-key-too",
             "by-line", "by-dict", "by-tuple", "by-param", "by-param-line"}
    found = asserted_in(tree, "t.py", names, {"EXIT_NETWORK": 5, "EXIT_AUTH": 4, "EXIT_INTERRUPTED": 130})
    assert set(found.codes) == names - {"in-a-comment", "in-a-docstring", "in-a-string"}
    assert set(found.exits) == {4, 5, 130}


def test_the_code_finder_knows_what_src_raises() -> None:
    found = raisable(ROOT / "src" / "qwenhome")
    # A class's own code when it is raised as is; a code= argument; an error[...] line.
    for code in ("snapshot-not-found", "gated-repo", "too-many-redirects", "interrupted", "upstream-failed"):
        assert code in found.codes, code
    # A base class never raised as is, and the root's placeholder, are not codes a user sees.
    assert "store-error" not in found.codes and "error" not in found.codes
    assert found.exits["EXIT_INTERRUPTED"] == 130 and found.exits["EXIT_AUTH"] == 4


def test_every_error_code_and_exit_code_is_asserted_by_a_test() -> None:
    """Fails listing each code ``src/`` can raise (and each documented exit code)
    that no test asserts, with where it is raised."""
    found = raisable(ROOT / "src" / "qwenhome")
    checked = asserted(ROOT / "tests", found.codes, found.exits)
    missing = sorted(set(found.codes) - set(checked.codes))
    exits = sorted(set(found.exits.values()) - set(checked.exits))
    lines = [f"  {code}  (raised at {', '.join(found.codes[code][:2])})" for code in missing]
    lines += [f"  exit {value}  ({next(k for k, v in found.exits.items() if v == value)})" for value in exits]
    assert not lines, f"{len(missing)} error codes and {len(exits)} exit codes no test asserts:\n" + "\n".join(lines)


# -- 401 / 403: permanent, never retried ------------------------------------------------

def test_gated_repo_stops_at_the_first_answer_with_exit_4(run_cli: RunCli, mirror: Mirror) -> None:
    mirror.faults.respond(403, json.dumps({"error": "Access to model Org/Small is restricted."}), path=REVISION,
                          headers={"X-Error-Code": "GatedRepo",
                                   "X-Error-Message": "Access to model Org/Small is restricted."}, times=None)
    res = run_cli(["pull", "Org/Small", "--source", mirror.url])
    assert res.returncode == 4, res.stderr
    line = last_line(res.stderr)
    assert line.startswith("error[gated-repo]: Org/Small is gated") and "accept the model's terms" in line
    assert len(mirror.faults.records(path=REVISION)) == 1, "a 403 is not retried"
    assert not mirror.faults.records(path=WEIGHTS)


def test_access_denied_on_a_file_fails_it_at_once_with_unauthorized(
        qwen_home: Path, mirror: Mirror, small_repo: GeneratedRepo) -> None:
    mirror.faults.respond(403, json.dumps({"error": "forbidden"}), path=WEIGHTS, times=None)
    with pytest.raises(AuthError) as info:
        pull(settings_for(qwen_home, mirror.url), RepoRef.parse("Org/Small"), config=ONE)
    assert info.value.code == "unauthorized" and info.value.exit_code == 4
    assert "HTTP 403" in info.value.message and "HF_TOKEN" in info.value.hint
    assert len(mirror.faults.records(path=WEIGHTS, method="GET")) == 1, "a 403 is not retried"
    etag = small_repo.files[WEIGHTS].etag
    assert not (qwen_home / "hub" / "models--Org--Small" / "blobs" / etag).exists()


# -- 429 / 5xx: transient, retried a bounded number of times -------------------------------

@pytest.mark.parametrize(("status", "code"), [(429, "rate-limited"), (503, "server-error")])
def test_a_source_that_keeps_failing_is_retried_then_named_with_exit_5(
        status: int, code: str, run_cli: RunCli, mirror: Mirror) -> None:
    mirror.faults.fail(status, times=None, path=REVISION, retry_after=0)
    res = run_cli(["pull", "Org/Small", "--source", mirror.url])
    assert res.returncode == 5, res.stderr
    assert last_line(res.stderr).startswith(f"error[{code}]:")
    assert len(mirror.faults.records(path=REVISION)) == METADATA_ATTEMPTS


def test_a_file_the_server_keeps_failing_ends_with_server_error_after_its_retries(
        qwen_home: Path, mirror: Mirror) -> None:
    mirror.faults.fail(500, times=None, path=WEIGHTS)
    with pytest.raises(ServerError) as info:
        pull(settings_for(qwen_home, mirror.url), RepoRef.parse("Org/Small"), config=ONE)
    assert info.value.code == "server-error"
    assert len(mirror.faults.records(path=WEIGHTS, method="GET")) == 1 + ONE.max_retries


# -- transport: TLS, redirects ---------------------------------------------------------

def test_tls_to_a_plain_http_server_is_a_tls_error(mirror: Mirror) -> None:
    url = mirror.url.replace("http://", "https://") + REVISION
    with pytest.raises(ConnectError) as info:
        HttpClient(env={}).open("GET", url)
    assert info.value.code == "tls-error" and "TLS" in info.value.message


def test_a_connect_the_kernel_refuses_to_make_is_connection_failed() -> None:
    """A link-local IPv6 address without its interface: connect() fails with EINVAL
    before any packet leaves, the generic transport failure."""
    with pytest.raises(ConnectError) as info:
        HttpClient(env={}).open("GET", "http://[fe80::1]:9/api/models/Org/Small")
    assert info.value.code == "connection-failed" and info.value.message.startswith("network error with [fe80::1]:9")


def test_a_redirect_without_location_is_a_bad_redirect(run_cli: RunCli, mirror: Mirror) -> None:
    mirror.faults.respond(302, b"", path=REVISION, times=None)
    res = run_cli(["pull", "Org/Small", "--source", mirror.url])
    assert res.returncode == 5, res.stderr
    assert last_line(res.stderr).startswith("error[bad-redirect]: redirect without Location")
    assert len(mirror.faults.records(path=REVISION)) == 1


def test_a_redirect_loop_ends_after_ten_redirects(mirror: Mirror) -> None:
    mirror.faults.respond(302, b"", path=REVISION, headers={"Location": REVISION}, times=None)
    with pytest.raises(ProtocolError) as info:
        HttpClient(env={}).open("GET", mirror.url + REVISION, max_redirects=10)
    assert info.value.code == "too-many-redirects"
    assert len(mirror.faults.records(path=REVISION)) == 11


def test_a_redirect_to_another_scheme_is_a_bad_url(mirror: Mirror) -> None:
    mirror.faults.respond(302, b"", path=REVISION, headers={"Location": "ftp://127.0.0.1/x"}, times=None)
    with pytest.raises(ProtocolError) as info:
        HttpClient(env={}).open("GET", mirror.url + REVISION)
    assert info.value.code == "bad-url" and "ftp://127.0.0.1/x" in info.value.message


@pytest.mark.parametrize("location", ["/api/caf\u00e9", "http://a..b:9/x", "http://127.0.0.1:99999/x"],
                         ids=["non-ascii-path", "empty-dns-label", "port-out-of-range"])
def test_a_redirect_no_request_can_follow_is_bad_url_and_not_retried(
        location: str, run_cli: RunCli, mirror: Mirror) -> None:
    """A path that is not ASCII, a host the resolver cannot even encode, a port
    out of range: retrying cannot help, and nothing is sent anywhere."""
    mirror.faults.respond(302, b"", path=REVISION, headers={"Location": location}, times=None)
    res = run_cli(["pull", "Org/Small", "--source", mirror.url])
    assert res.returncode == 5, res.stderr
    line = last_line(res.stderr)
    assert line.startswith("error[bad-url]: ") and location in line, line
    assert "retry" not in res.stderr and "Traceback" not in res.stderr
    assert len(mirror.faults.records(path=REVISION)) == 1


@pytest.mark.parametrize("event_loop", [True, False], ids=["event-loop", "worker-threads"])
@pytest.mark.parametrize("location", ["http://a..b:9/x", "http://127.0.0.1:99999/x"])
def test_a_file_redirected_where_no_request_can_go_fails_with_bad_url(
        event_loop: bool, location: str, qwen_home: Path, mirror: Mirror) -> None:
    """The redirect a CDN would answer for a file, to a host or port no
    connection can be made to: the file fails with bad-url, the pull says so
    (no traceback from the event loop, no retries)."""
    mirror.faults.respond(302, b"", path=WEIGHTS, headers={"Location": location}, times=None)
    with pytest.raises(ProtocolError) as info:
        pull(settings_for(qwen_home, mirror.url), RepoRef.parse("Org/Small"),
             config=replace(ONE, loop_threads=2 if event_loop else 0))
    assert info.value.code == "bad-url" and WEIGHTS in info.value.message and location in info.value.message
    assert len(mirror.faults.records(path=WEIGHTS, method="GET")) == 1


def test_a_file_the_source_lists_but_does_not_serve_is_entry_not_found(
        qwen_home: Path, mirror: Mirror) -> None:
    mirror.faults.respond(404, b"", path="config.json", headers={"X-Error-Code": "EntryNotFound"}, times=None)
    with pytest.raises(EntryNotFoundError) as info:
        pull(settings_for(qwen_home, mirror.url), RepoRef.parse("Org/Small"), config=ONE)
    assert info.value.code == "entry-not-found" and info.value.exit_code == 3
    assert len(mirror.faults.records(path="config.json")) == 1


def test_an_unknown_revision_is_revision_not_found_with_exit_3(run_cli: RunCli, mirror: Mirror) -> None:
    res = run_cli(["pull", "Org/Small@no-such-branch", "--source", mirror.url])
    assert res.returncode == 3, res.stderr
    assert last_line(res.stderr).startswith("error[revision-not-found]:")


@pytest.fixture
def garbage_server() -> Iterator[tuple[str, list[bytes]]]:
    """A server on 127.0.0.1 that answers every request with a malformed status line;
    yields its URL and the requests it got."""
    listener = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                got.append(conn.recv(65536))
                conn.sendall(b"HTTP/1.1 OK banana\r\nContent-Length: 5\r\n\r\nhello")

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", got
    finally:
        listener.close()


def test_a_malformed_answer_to_a_ranged_get_is_bad_response(
        tmp_path: Path, garbage_server: tuple[str, list[bytes]]) -> None:
    url, got = garbage_server
    source = Source("garbage", "hf", url)
    job = FileJob("a" * 64, "f.bin", 5, "a" * 64, None, [Candidate(source, f"{url}/f.bin")], tmp_path / "f.part")
    errors = TransferEngine(HttpClient(env={}), ONE).run([job], on_verified=lambda _job: None)
    assert errors[job.key].code == "bad-response"
    assert "bad status line 'HTTP/1.1 OK banana'" in errors[job.key].message
    assert got and got[0].startswith(b"GET /f.bin HTTP/1.1\r\n")


# -- the store: locks, broken snapshots ------------------------------------------------------

@pytest.mark.timeout(120)
def test_a_blob_lock_held_too_long_is_lock_timeout_not_a_hang(
        qwen_home: Path, mirror: Mirror, small_repo: GeneratedRepo) -> None:
    """Another process holds the weights' lock and never lets go (stopped, or
    hung): the pull waits its bound, then says so."""
    store = Store(qwen_home / "hub", qwen_home / "qwenhome")
    holder = store.file_lock(small_repo.files[WEIGHTS].etag)  # a second open file: flock conflicts
    assert holder.acquire()
    try:
        t0 = time.monotonic()
        with pytest.raises(LockTimeoutError) as info:
            pull(settings_for(qwen_home, mirror.url, Timeouts(lock=1.0)), RepoRef.parse("Org/Small"), config=ONE)
        waited = time.monotonic() - t0
    finally:
        holder.release()
    assert info.value.code == "lock-timeout" and WEIGHTS in info.value.message
    assert waited >= 1.0
    assert not mirror.faults.records(path=WEIGHTS), "a file another process holds is not fetched twice"
    # Once the lock is free the same pull completes.
    result = pull(settings_for(qwen_home, mirror.url), RepoRef.parse("Org/Small"), config=ONE)
    assert result.downloaded_bytes == small_repo.files[WEIGHTS].size


def test_a_snapshot_with_a_missing_blob_is_incomplete_and_a_pull_fetches_only_it(
        run_cli: RunCli, qwen_home: Path, mirror: Mirror, small_repo: GeneratedRepo) -> None:
    assert run_cli(["pull", "Org/Small", "--source", mirror.url]).returncode == 0
    etag = small_repo.files["tokenizer.json"].etag
    (qwen_home / "hub" / "models--Org--Small" / "blobs" / etag).unlink()
    res = run_cli(["path", "Org/Small"])
    assert res.returncode == 3, res.stderr
    line = last_line(res.stderr)
    assert line.startswith("error[snapshot-incomplete]: Org/Small is incomplete: 1 file(s) missing, e.g. tokenizer.json")
    assert "run `qwenhome pull` again" in line
    before = {rel: mirror.faults.bytes_sent(rel) for rel in small_repo.files}
    assert run_cli(["pull", "Org/Small", "--source", mirror.url]).returncode == 0
    fetched = {rel: mirror.faults.bytes_sent(rel) - n for rel, n in before.items()}
    assert fetched == {rel: (f.size if rel == "tokenizer.json" else 0) for rel, f in small_repo.files.items()}
    assert run_cli(["path", "Org/Small"]).returncode == 0


def test_removing_a_revision_that_is_not_in_the_home_is_revision_not_cached(
        run_cli: RunCli, qwen_home: Path, mirror: Mirror) -> None:
    assert run_cli(["pull", "Org/Small", "--source", mirror.url]).returncode == 0
    res = run_cli(["rm", "Org/Small@v9"])
    assert res.returncode == 3, res.stderr
    assert last_line(res.stderr).startswith("error[revision-not-cached]: Org/Small@v9 is not in the home")
    assert run_cli(["path", "Org/Small"]).returncode == 0, "nothing else was removed"

