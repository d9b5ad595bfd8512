"""The engine's error codes, each brought about for real: a request during a
real load in progress (``engine-loading``), a model whose weights are broken
so that sampling fails inside ``generate`` (``generation-failed``), and a
launched server that is killed and may not be restarted (``engine-crashed``)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file

from qwenhome.app.launch import free_port, run_launch
from qwenhome.app.server import create_app
from qwenhome.app.state import AppState
from qwenhome.app.supervisor import RestartPolicy
from qwenhome.app.transformers_engine import TransformersEngine
from qwenhome.config import load_settings
from qwenhome.demo import DEMO_REPO
from qwenhome.errors import QwenhomeError
from tests.app_support.servers import Tee, serve_app, wait_ready
from tests.app_support.tiny import seed_demo_repos, tiny_model_dir

HELLO = "Hello! I am a tiny model running from your qwenhome, fully offline."


def chat(url: str, **extra: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
        "model": DEMO_REPO, "messages": [{"role": "user", "content": "Hello"}], **extra})


def test_a_request_during_a_load_in_progress_is_told_engine_loading(tmp_path: Path) -> None:
    gate = threading.Event()

    def load() -> TransformersEngine:
        gate.wait(60)  # the load is under way (as a large model's is for minutes) until the test lets it finish
        return TransformersEngine(tiny_model_dir(), DEMO_REPO)

    state = AppState(load_settings({}, home=str(tmp_path / "home")), DEMO_REPO, engine_factory=load)
    with serve_app(create_app(state)) as url:
        assert httpx.get(f"{url}/health", timeout=5).json()["status"] == "loading"
        r = chat(url, temperature=0)
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "engine-loading" and "still loading" in err["message"] and err["hint"]
        gate.set()
        assert wait_ready(url)["status"] == "ready"
        r = chat(url, temperature=0)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == HELLO


def test_a_model_with_broken_weights_fails_its_generation_with_generation_failed(tmp_path: Path) -> None:
    broken = shutil.copytree(tiny_model_dir(), tmp_path / "broken")
    weights = load_file(broken / "model.safetensors")
    name = next(k for k in weights if "embed_tokens" in k)  # tied: the output layer too
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})

    state = AppState(load_settings({}, home=str(tmp_path / "home")), DEMO_REPO,
                     engine_factory=lambda: TransformersEngine(broken, DEMO_REPO))
    with serve_app(create_app(state)) as url:
        assert wait_ready(url)["status"] == "ready"  # it loads: the file is well formed
        r = chat(url, temperature=1.0, max_tokens=4)  # sampling from NaN probabilities fails in torch
        assert r.status_code == 500, r.text
        err = r.json()["error"]
        assert err["code"] == "generation-failed" and "generation failed:" in err["message"]
        assert err["type"] == "server_error"
        # The worker survives: the server still answers, and fails the same way again.
        assert httpx.get(f"{url}/health", timeout=5).json()["status"] == "ready"
        assert chat(url, temperature=1.0, max_tokens=4).json()["error"]["code"] == "generation-failed"


@pytest.fixture
def demo_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    seed_demo_repos(home)
    return home


def test_a_killed_server_that_may_not_restart_ends_the_launch_with_engine_crashed(demo_home: Path) -> None:
    settings = load_settings({}, home=str(demo_home))
    port = free_port()
    out = Tee()
    ready = threading.Event()
    stop = threading.Event()
    raised: list[BaseException] = []

    def launch() -> None:
        try:
            run_launch(settings, demo=True, engine="transformers", port=port, base_env=dict(os.environ),
                       policy=RestartPolicy(max_restarts=0), out=out, ready=lambda _u: ready.set(), stop=stop)
        except BaseException as exc:  # the launch's own error, checked below
            raised.append(exc)

    t = threading.Thread(target=launch, daemon=True)
    t.start()
    try:
        assert ready.wait(180), out.text()
        pid = wait_ready(f"http://127.0.0.1:{port}")["pid"]
        os.kill(pid, signal.SIGKILL)
        t.join(60)
        assert not t.is_alive(), out.text()
    finally:
        stop.set()
        t.join(30)
    assert len(raised) == 1 and isinstance(raised[0], QwenhomeError), (raised, out.text())
    err = raised[0]
    assert err.code == "engine-crashed"
    assert err.message.startswith("server killed by SIGKILL (signal 9)") and "gave up after 0 restarts" in err.message
    assert "see the lines above" in err.hint
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # and nothing is left listening
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
        except httpx.TransportError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the server still answers after the launch ended")
