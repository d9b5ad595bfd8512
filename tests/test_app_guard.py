"""What the API refuses before any route runs: foreign Host names (DNS
rebinding), pages of other origins, and bodies past their limit. Real servers
on 127.0.0.1: uvicorn in a thread over a home that pulled from the test mirror,
and the real ``qwenhome.app.serve`` process (for its memory)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from qwenhome.app.guard import AllowList
from qwenhome.app.server import create_app
from qwenhome.app.state import AppState
from qwenhome.config import load_settings
from qwenhome.demo import DEMO_REPO
from tests.app_support.servers import raw_request, serve_app, serve_process
from tests.app_support.shared import shared_server
from tests.support.cli import RunCli
from tests.support.mirror import Mirror

MiB = 1024 * 1024


@pytest.fixture
def home_api(tmp_path: Path, mirror: Mirror) -> Iterator[tuple[httpx.Client, AppState, str]]:
    """An API (no engine) serving Other/Model over a home that holds Org/Small,
    pulled through the API from the test mirror; ``box.lan`` is an allowed host."""
    settings = load_settings({}, home=str(tmp_path / "home"), sources=[mirror.url])
    state = AppState(settings, "Other/Model", allow=AllowList.parse("127.0.0.1", ["box.lan"]))
    with serve_app(create_app(state)) as url, httpx.Client(base_url=url, timeout=60) as client:
        job = client.post("/api/models/pull", json={"repo": "Org/Small"}).json()
        with client.stream("GET", job["events"]) as r:
            for _ in r.iter_lines():
                pass
        assert state.pulls.jobs[job["id"]].state == "done"
        yield client, state, url


def repos(client: httpx.Client) -> list[str]:
    return [m["repo"] for m in client.get("/api/models").json()["models"]]


def test_a_rebound_host_name_can_neither_remove_pull_nor_chat(home_api: tuple[httpx.Client, AppState, str]) -> None:
    client, state, _ = home_api
    evil = {"Host": "evil.example"}
    r = client.delete("/api/models/Org/Small", headers=evil)
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["code"] == "host-not-allowed"
    assert "evil.example" in err["message"] and "--allowed-host" in err["hint"]
    assert repos(client) == ["Org/Small"]

    before = len(state.pulls.jobs)
    r = client.post("/api/models/pull", json={"repo": "Org/Small"}, headers=evil)
    assert r.status_code == 403 and r.json()["error"]["code"] == "host-not-allowed"
    assert len(state.pulls.jobs) == before
    r = client.post("/v1/chat/completions", headers={"Host": "evil.example:8000"},
                    json={"model": "Other/Model", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "host-not-allowed"
    # The right name on another port is another server's name, too.
    port = urlsplit(str(client.base_url)).port
    assert client.get("/health", headers={"Host": f"localhost:{port + 1}"}).status_code == 403
    for good in (f"localhost:{port}", f"127.0.0.1:{port}", "box.lan", "box.lan:443", "BOX.lan:8000"):
        assert client.get("/api/models", headers={"Host": good}).status_code == 200, good


def test_a_page_of_another_origin_cannot_post_but_the_own_page_can(home_api: tuple[httpx.Client, AppState, str]) -> None:
    client, _, url = home_api
    # A body-less cross-origin POST (an HTML form, or fetch in no-cors mode) would re-hash the model.
    for origin in ("http://evil.example", "null", f"http://evil.example:{urlsplit(url).port}", "file://"):
        r = client.post("/api/models/Org/Small/verify", headers={"Origin": origin})
        assert r.status_code == 403, (origin, r.text)
        err = r.json()["error"]
        assert err["code"] == "origin-not-allowed" and "--allowed-host" in err["hint"]
    r = client.delete("/api/models/Org/Small", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and repos(client) == ["Org/Small"]

    r = client.post("/api/models/Org/Small/verify", headers={"Origin": url})
    assert r.status_code == 200 and r.json()["ok"] is True
    r = client.post("/api/models/Org/Small/verify", headers={"Origin": "https://box.lan", "Host": "box.lan"})
    assert r.status_code == 200
    r = client.delete("/api/models/Org/Small", headers={"Origin": url})
    assert r.status_code == 200 and repos(client) == []


def test_launch_refuses_a_bad_allowed_host_at_once(run_cli: RunCli) -> None:
    rc, _out, err = run_cli(["launch", "--allowed-host", "evil.example/path", "--port", "1"], timeout=60)
    assert rc == 2
    assert err.strip().startswith("error[invalid-allowed-host]: --allowed-host 'evil.example/path'"), err
    assert "Traceback" not in err


def test_a_declared_oversized_body_is_refused_before_it_is_sent() -> None:
    url = shared_server().url
    host = urlsplit(url).netloc
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {200 * MiB}\r\n\r\n")
    started = time.monotonic()
    status, body = raw_request(url, head)  # not one byte of the body goes out
    assert status == 413
    assert body["error"]["code"] == "request-too-large"  # type: ignore[index]
    assert time.monotonic() - started < 5


def padded_chat(size: int) -> bytes:
    """A valid chat request padded to ``size`` bytes with an ignored field."""
    head = json.dumps({"model": DEMO_REPO, "messages": [{"role": "user", "content": "Hello"}],
                       "max_tokens": 2})[:-1] + ', "pad": "'
    return head.encode() + b"a" * (size - len(head) - 2) + b'"}'


def test_the_chat_limit_holds_for_a_chunked_body_and_is_configurable(tmp_path: Path) -> None:
    shared = shared_server()
    small = padded_chat(3 * MiB)
    with serve_process(shared.settings.home, shared.snapshot, DEMO_REPO, "--max-body-mib", "2",
                       workdir=tmp_path) as server:
        def chunks(body: bytes) -> Iterator[bytes]:
            for i in range(0, len(body), 256 * 1024):
                yield body[i:i + 256 * 1024]

        r = httpx.post(f"{server.url}/v1/chat/completions", content=chunks(small), timeout=60,
                       headers={"Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        err = r.json()["error"]
        assert err["code"] == "request-too-large" and "2 MiB" in err["message"]
        ok = httpx.post(f"{server.url}/v1/chat/completions", content=padded_chat(MiB), timeout=60,
                        headers={"Content-Type": "application/json"})
        assert ok.status_code == 200, ok.text
        assert "Traceback" not in server.log_text()


def test_a_large_chunked_chat_body_costs_no_memory_and_health_keeps_answering(tmp_path: Path) -> None:
    shared = shared_server()
    body = padded_chat(96 * MiB)
    with serve_process(shared.settings.home, shared.snapshot, DEMO_REPO, workdir=tmp_path) as server:
        before = server.rss()
        server.reset_peak()
        answers: list[int] = []
        stop = threading.Event()

        def probe() -> None:
            with httpx.Client(timeout=10) as c:
                while not stop.is_set():
                    answers.append(c.get(f"{server.url}/health").status_code)
                    time.sleep(0.02)

        t = threading.Thread(target=probe)
        t.start()
        deadline = time.monotonic() + 10
        while not answers and time.monotonic() < deadline:
            time.sleep(0.01)

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(body), MiB):
                yield body[i:i + MiB]

        try:
            r = httpx.post(f"{server.url}/v1/chat/completions", content=chunks(), timeout=60,
                           headers={"Content-Type": "application/json"})
        finally:
            stop.set()
            t.join(20)
        assert r.status_code == 413, r.text[:300]
        assert r.json()["error"]["code"] == "request-too-large"
        growth = max(server.peak(), server.rss()) - before
        assert growth < 64 * MiB, f"the server grew by {growth / MiB:.0f} MiB"
        assert answers and set(answers) == {200}
        assert httpx.get(f"{server.url}/health", timeout=5).json()["status"] == "ready"
