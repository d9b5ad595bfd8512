"""Model management over HTTP: pulls from a real mirror with SSE progress from
the real transfer, listing, verify, remove, the doctor, and their errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qwenhome.app.server import create_app
from qwenhome.app.state import AppState
from qwenhome.config import load_settings
from tests.app_support.servers import serve_app
from tests.support.mirror import Mirror
from tests.support.repos import GeneratedRepo


def sse_events(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Read a whole SSE stream: ``(id, data)`` pairs, until the server closes it."""
    out: list[tuple[str, dict[str, Any]]] = []
    event_id = ""
    with client.stream("GET", url, headers=headers or {}, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                out.append((event_id, json.loads(line[6:])))
    return out


@pytest.fixture
def api(tmp_path: Path, mirror: Mirror, small_repo: GeneratedRepo) -> Iterator[tuple[httpx.Client, AppState]]:
    """An API (no engine) whose home pulls from the test mirror, serving Org/Small."""
    settings = load_settings({}, home=str(tmp_path / "home"), sources=[mirror.url])
    state = AppState(settings, "Org/Small")
    with serve_app(create_app(state)) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, state


def pull(client: httpx.Client, repo: str) -> list[tuple[str, dict[str, Any]]]:
    r = client.post("/api/models/pull", json={"repo": repo})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["events"] == f"/api/pulls/{job['id']}/events"
    return sse_events(client, job["events"])


def test_pull_streams_progress_from_the_real_transfer_then_the_result(
    api: tuple[httpx.Client, AppState], small_repo: GeneratedRepo
) -> None:
    client, _ = api
    events = pull(client, "Org/Small")
    kinds = [e["event"] for _, e in events]
    assert kinds[0] == "start"
    assert kinds[-1] == "result"
    assert "progress" in kinds and "file-done" in kinds
    total = next(e["total"] for _, e in events if e["event"] == "start")
    assert total >= 5 * 1024 * 1024
    done = [e["done"] for _, e in events if e["event"] == "progress"]
    assert done == sorted(done) and done[-1] == total
    result = events[-1][1]
    assert result["repo"] == "Org/Small" and result["downloaded_bytes"] == total
    assert Path(result["snapshot"], "model.safetensors").stat().st_size == 5 * 1024 * 1024 + 123
    ids = [int(i) for i, _ in events]
    assert ids == list(range(len(events)))

    models = client.get("/api/models").json()["models"]
    assert [(m["repo"], m["state"], m["served"]) for m in models] == [("Org/Small", "complete", True)]
    assert models[0]["size"] >= total


def test_reconnecting_with_last_event_id_resumes_after_it(api: tuple[httpx.Client, AppState]) -> None:
    client, state = api
    events = pull(client, "Org/Small")
    job_id = next(iter(state.pulls.jobs))
    again = sse_events(client, f"/api/pulls/{job_id}/events", headers={"Last-Event-ID": "1"})
    assert [e for _, e in again] == [e for _, e in events[2:]]


def test_a_second_pull_of_a_cached_model_downloads_nothing(api: tuple[httpx.Client, AppState]) -> None:
    client, _ = api
    pull(client, "Org/Small")
    result = pull(client, "Org/Small")[-1][1]
    assert result["event"] == "result" and result["downloaded_bytes"] == 0


def test_pull_of_a_missing_repo_ends_with_the_cli_error_code(api: tuple[httpx.Client, AppState]) -> None:
    client, _ = api
    events = pull(client, "Org/DoesNotExist")
    last = events[-1][1]
    assert last["event"] == "error"
    assert last["error"]["code"] == "repo-not-found"
    assert last["error"]["hint"]


def test_invalid_repo_id_and_unknown_pull_are_4xx(api: tuple[httpx.Client, AppState]) -> None:
    client, _ = api
    r = client.post("/api/models/pull", json={"repo": "../../etc"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid-repo-id"
    r = client.post("/api/models/pull", json={"nope": 1})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid-request"
    # The hint is about this route's body, not about chat completions.
    assert r.json()["error"]["hint"] == 'send {"repo": "Org/Name"} (or "Org/Name@revision")'
    r = client.get("/api/pulls/0123456789abcdef/events")
    assert r.status_code == 404 and r.json()["error"]["code"] == "pull-not-found"


def test_verify_then_remove_refused_for_the_served_model_allowed_for_another(
    api: tuple[httpx.Client, AppState], tmp_path: Path
) -> None:
    client, state = api
    pull(client, "Org/Small")
    r = client.post("/api/models/Org/Small/verify")
    assert r.status_code == 200 and r.json()["ok"] is True

    r = client.delete("/api/models/Org/Small")
    assert r.status_code == 409 and r.json()["error"]["code"] == "model-in-use"

    other = AppState(state.settings, "Other/Model")
    with serve_app(create_app(other)) as url:
        r = httpx.delete(f"{url}/api/models/Org/Small", timeout=30)
        assert r.status_code == 200, r.text
        assert httpx.get(f"{url}/api/models", timeout=30).json()["models"] == []
        r = httpx.post(f"{url}/api/models/Org/Small/verify", timeout=30)
        assert r.status_code == 404


def test_verify_reports_a_corrupted_blob(api: tuple[httpx.Client, AppState]) -> None:
    client, _ = api
    result = pull(client, "Org/Small")[-1][1]
    blob = Path(result["snapshot"], "model.safetensors").resolve()
    blob.chmod(0o644)
    with blob.open("r+b") as f:
        f.seek(1000)
        f.write(b"\xff\x00corrupt")
    body = client.post("/api/models/Org/Small/verify").json()
    assert body["ok"] is False


def test_doctor_endpoint_returns_the_doctors_checks(api: tuple[httpx.Client, AppState]) -> None:
    client, _ = api
    report = client.get("/api/doctor").json()
    assert report["checks"], report
    assert all({"id", "status", "summary"} <= set(c) for c in report["checks"])
    assert {c["status"] for c in report["checks"]} <= {"pass", "warn", "fail", "skip"}


def test_a_pull_in_progress_cannot_be_removed_and_is_cancelled_from_the_api(tmp_path: Path, mirror: Mirror) -> None:
    settings = load_settings({}, home=str(tmp_path / "home"), sources=[mirror.url])
    with serve_app(create_app(AppState(settings, "Other/Model"))) as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        pull_then_cancel(client, mirror)


def pull_then_cancel(client: httpx.Client, mirror: Mirror) -> None:
    mirror.faults.bandwidth(256 * 1024)  # per connection: the 5 MiB file takes a while
    r = client.post("/api/models/pull", json={"repo": "Org/Small"})
    job = r.json()
    events: list[dict[str, Any]] = []
    with client.stream("GET", job["events"], timeout=60) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(json.loads(line[6:]))
            if events[-1]["event"] == "progress" and len([e for e in events if e["event"] == "progress"]) == 2:
                removed = client.delete("/api/models/Org/Small")
                assert removed.status_code == 409 and removed.json()["error"]["code"] == "pull-running"
                assert "cancel the pull" in removed.json()["error"]["hint"]
                assert client.delete(f"/api/pulls/{job['id']}").status_code == 200
    last = events[-1]
    assert last["event"] == "error" and last["error"]["code"] == "cancelled", last
    assert client.get(f"/api/pulls/{job['id']}").json()["state"] == "cancelled"
    assert "doctor" not in last["error"]  # a cancel is no network problem
