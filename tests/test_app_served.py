"""What is served, from the API and the ``openai`` package, against the real
server process: every chat and image model of the home is listed with its
kind and state; ``GET /v1/models/{id}`` answers (``models.retrieve``); the
served chat and image models are switched without a restart (the new one
loads in a new worker, the old worker is gone, what it was doing ends with
``model-switched``); wrong switches get clear errors."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from qwenhome.config import load_settings
from qwenhome.demo import DEMO_REPO, ensure_demo_model
from qwenhome.demo.flow import ensure_demo_repo
from qwenhome.images.demo import ensure_demo_image_model
from qwenhome.images.tiny import TINY_REPO_ID
from tests.app_support.servers import ServerProcess, serve_process, wait_ready
from tests.app_support.tiny import seed_demo_repos, tiny_image_model_dir, tiny_model_dir

HELLO = "Hello! I am a tiny model running from your qwenhome, fully offline."
SECOND = "qwenhome/tiny-qwen2-second"
SECOND_IMAGE = "qwenhome/tiny-qwen-image-second"


def copy_of(folder: Path | None) -> Any:
    def build(dest: Path) -> None:
        assert folder is not None
        shutil.copytree(folder, dest)

    return build


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The real server over a home with two chat models and two image models,
    each pulled into it the way the demo pulls (a local mirror, the real pull)."""
    work = tmp_path_factory.mktemp("served")
    home = work / "home"
    seed_demo_repos(home)
    conf = load_settings({}, home=str(home))
    snapshot = ensure_demo_model(conf)
    ensure_demo_image_model(conf)
    ensure_demo_repo(conf, SECOND, "config.json", copy_of(tiny_model_dir()), "a second chat model")
    ensure_demo_repo(conf, SECOND_IMAGE, "model_index.json", copy_of(tiny_image_model_dir()), "a second image model")
    with serve_process(home, snapshot, DEMO_REPO, workdir=work) as s:
        wait_ready(s.url)
        yield s


def served(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/api/served", timeout=30).json()
    return body


def chat(url: str, model: str, **extra: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
        "model": model, "messages": [{"role": "user", "content": "Hello"}], "temperature": 0, **extra})


def test_every_servable_model_is_listed_with_its_kind_and_state(server: ServerProcess) -> None:
    models = {m["repo"]: (m["kind"], m["state"]) for m in served(server.url)["models"]}
    assert models == {DEMO_REPO: ("chat", "served"), SECOND: ("chat", "available"),
                      TINY_REPO_ID: ("image", "served"), SECOND_IMAGE: ("image", "available")}
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    listed = {m.id: m.model_extra for m in client.models.list()}
    assert set(listed) == set(models)
    assert listed[TINY_REPO_ID] == {"kind": "image", "state": "served"}
    # The id holds a slash: the real client's models.retrieve reaches it.
    one = client.models.retrieve(DEMO_REPO)
    assert one.id == DEMO_REPO and one.owned_by == "qwenhome" and one.model_extra["kind"] == "chat"
    assert client.models.retrieve(SECOND_IMAGE).model_extra == {"kind": "image", "state": "available"}
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("Nobody/Nothing")
    assert info.value.body["code"] == "model-not-found"  # type: ignore[index]
    rows = {m["repo"]: m for m in httpx.get(f"{server.url}/api/models", timeout=30).json()["models"]}
    assert (rows[SECOND]["kind"], rows[SECOND]["serving"], rows[SECOND]["served"]) == ("chat", "available", False)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "invalid-request"),
        ({"chat": 5}, 400, "invalid-request"),
        ({"chat": DEMO_REPO, "text": "x"}, 400, "invalid-request"),
        ({"chat": "../etc"}, 400, "invalid-repo-id"),
        ({"chat": "Nobody/Nothing"}, 404, "snapshot-not-found"),
        ({"chat": TINY_REPO_ID}, 400, "model-not-servable"),  # an image model is not a chat model
        ({"image": SECOND}, 400, "model-not-servable"),
    ],
)
def test_a_wrong_switch_gets_a_clear_error_and_changes_nothing(
    server: ServerProcess, body: dict[str, Any], status: int, code: str
) -> None:
    r = httpx.post(f"{server.url}/api/served", json=body, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["hint"]
    if code == "invalid-request":
        assert "/api/served" in err["hint"] or '"chat"' in err["hint"]
    assert served(server.url)["served"]["chat"]["model"] == DEMO_REPO


def test_the_chat_model_is_switched_without_a_restart(server: ServerProcess) -> None:
    before = wait_ready(server.url)
    old_pid = before["engines"]["chat"]["pid"]
    body = {"model": DEMO_REPO, "messages": [{"role": "user", "content": "Hello"}], "stream": True,
            "max_tokens": 480, "ignore_eos": True}
    chunks: list[Any] = []
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                chunks.append(json.loads(line[6:]) if line != "data: [DONE]" else "[DONE]")
            if len(chunks) == 4:
                r = httpx.post(f"{server.url}/api/served", json={"chat": SECOND}, timeout=60)
                assert r.status_code == 202, r.text
                assert r.json()["served"]["chat"]["model"] == SECOND
    # The generation on the old model ended, saying why.
    assert chunks[-1] == "[DONE]" and chunks[-2]["error"]["code"] == "model-switched", chunks[-3:]
    assert SECOND in chunks[-2]["error"]["message"]
    after = wait_ready(server.url)
    assert after["status"] == "ready" and after["model"] == SECOND
    new_pid = after["engines"]["chat"]["pid"]
    assert new_pid not in (None, old_pid, server.proc.pid)
    with pytest.raises(ProcessLookupError):  # the old worker is gone, its memory with it
        os.kill(old_pid, 0)
    r = chat(server.url, SECOND)
    assert r.status_code == 200 and r.json()["model"] == SECOND
    assert r.json()["choices"][0]["message"]["content"] == HELLO
    r = chat(server.url, DEMO_REPO)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model-not-found"
    assert "/api/served" in r.json()["error"]["hint"]
    states = {m["repo"]: m["state"] for m in served(server.url)["models"]}
    assert states[SECOND] == "served" and states[DEMO_REPO] == "available"
    # The served model cannot be removed; the one no longer served can.
    r = httpx.delete(f"{server.url}/api/models/{SECOND}", timeout=30)
    assert r.status_code == 409 and r.json()["error"]["code"] == "model-in-use"
    r = httpx.post(f"{server.url}/api/served", json={"chat": DEMO_REPO}, timeout=60)
    assert r.status_code == 202
    assert wait_ready(server.url)["model"] == DEMO_REPO


def test_the_image_model_is_switched_without_a_restart(server: ServerProcess) -> None:
    old_pid = wait_ready(server.url)["engines"]["image"]["pid"]
    r = httpx.post(f"{server.url}/api/served", json={"image": SECOND_IMAGE}, timeout=60)
    assert r.status_code == 202, r.text
    status = httpx.get(f"{server.url}/api/images/status", timeout=30).json()
    assert status["model"] == SECOND_IMAGE
    # A request that arrives while it loads waits for it.
    job = {"prompt": "a fox", "size": "64x64", "num_inference_steps": 2, "seed": 3}
    r = httpx.post(f"{server.url}/v1/images/generations", json=job, timeout=120)
    assert r.status_code == 200, r.text
    record = httpx.get(f"{server.url}/api/images?limit=1", timeout=30).json()["images"][0]
    assert record["model"] == SECOND_IMAGE
    deadline = time.monotonic() + 30
    while True:  # the old worker exits once its socket closes
        try:
            os.kill(old_pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert wait_ready(server.url)["engines"]["image"]["model"] == SECOND_IMAGE


def test_an_image_model_pulled_after_the_start_is_served_without_a_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    seed_demo_repos(home)
    conf = load_settings({}, home=str(home))
    snapshot = ensure_demo_model(conf)
    with serve_process(home, snapshot, DEMO_REPO, workdir=tmp_path) as s:
        assert wait_ready(s.url)["status"] == "ready"  # no image model: nothing to wait for
        status = httpx.get(f"{s.url}/api/images/status", timeout=30).json()
        assert status["state"] == "none" and status["model"] is None
        job = {"prompt": "a fox", "size": "64x64", "num_inference_steps": 2, "seed": 3}
        r = httpx.post(f"{s.url}/v1/images/generations", json=job, timeout=60)
        assert r.status_code == 503 and r.json()["error"]["code"] == "no-image-model", r.text
        assert "/api/served" in r.json()["error"]["hint"]
        ensure_demo_image_model(conf)  # pulled into the same home while the server runs
        r = httpx.post(f"{s.url}/api/served", json={"image": TINY_REPO_ID}, timeout=60)
        assert r.status_code == 202, r.text
        r = httpx.post(f"{s.url}/v1/images/generations", json=job, timeout=180)
        assert r.status_code == 200, r.text
        assert wait_ready(s.url)["engines"]["image"]["model"] == TINY_REPO_ID
