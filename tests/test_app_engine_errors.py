"""The engine's error codes and readiness, each brought about for real: a
request during a real load in progress (it waits; past the server's bound it
gets ``engine-loading`` with Retry-After, and ``/health`` is 503 until the
load ends), a model whose weights are broken so that sampling fails inside
``generate`` (``generation-failed``), a chat worker killed mid-generation
(``engine-crashed``, then ``engine-unavailable`` while it restarts, then
served again), a worker that may not restart, and a launched server that is
killed and may not be restarted (``engine-crashed``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file

from qwenhome.app.launch import free_port, run_launch
from qwenhome.app.server import create_app
from qwenhome.app.state import AppState
from qwenhome.app.supervisor import RestartPolicy
from qwenhome.app.workers.process import WorkerOptions
from qwenhome.config import load_settings
from qwenhome.demo import DEMO_REPO
from qwenhome.errors import QwenhomeError
from tests.app_support.servers import Tee, serve_app, wait_ready
from tests.app_support.tiny import seed_demo_repos, tiny_model_dir

HELLO = "Hello! I am a tiny model running from your qwenhome, fully offline."
GATED = Path(__file__).parent / "app_support" / "gated_worker.py"


def chat(url: str, **extra: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
        "model": DEMO_REPO, "messages": [{"role": "user", "content": "Hello"}], **extra})


def gated(tmp_path: Path) -> tuple[WorkerOptions, Path]:
    """Worker options whose load is held until the returned file exists."""
    gate = tmp_path / "gate"
    return WorkerOptions(python=(sys.executable, str(GATED), str(gate))), gate


def running(pid: int) -> bool:
    """The process exists and has not ended (a zombie waits only to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def health(url: str) -> httpx.Response:
    return httpx.get(f"{url}/health", timeout=10)


def test_a_request_during_a_load_waits_for_it_and_health_is_503_until_ready(tmp_path: Path) -> None:
    options, gate = gated(tmp_path)
    state = AppState(load_settings({}, home=str(tmp_path / "home")), DEMO_REPO, snapshot=tiny_model_dir(),
                     workers=options)
    with serve_app(create_app(state)) as url:
        r = health(url)
        assert r.status_code == 503 and r.json()["status"] == "loading", r.text
        assert r.json()["engines"]["chat"]["state"] == "loading" and r.headers["retry-after"]
        answers: list[httpx.Response] = []
        t = threading.Thread(target=lambda: answers.append(chat(url, temperature=0)))
        t.start()
        time.sleep(1.5)
        assert t.is_alive() and not answers, "the request waits for the load, it is not refused"
        gate.touch()
        t.join(120)
        assert answers and answers[0].status_code == 200, answers and answers[0].text
        assert answers[0].json()["choices"][0]["message"]["content"] == HELLO
        r = health(url)
        assert r.status_code == 200 and r.json()["status"] == "ready"


def test_past_the_bound_a_request_during_a_load_gets_503_engine_loading(tmp_path: Path) -> None:
    options, gate = gated(tmp_path)
    state = AppState(load_settings({}, home=str(tmp_path / "home")), DEMO_REPO, snapshot=tiny_model_dir(),
                     workers=options, ready_wait=0.5)
    with serve_app(create_app(state)) as url:
        started = time.monotonic()
        r = chat(url, temperature=0)
        assert r.status_code == 503, r.text
        assert time.monotonic() - started >= 0.5
        err = r.json()["error"]
        assert err["code"] == "engine-loading" and "still loading" in err["message"] and err["hint"]
        assert int(r.headers["retry-after"]) > 0
        gate.touch()
        assert wait_ready(url)["status"] == "ready"
        r = chat(url, temperature=0)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == HELLO


def test_a_model_with_broken_weights_fails_its_generation_with_generation_failed(tmp_path: Path) -> None:
    broken = shutil.copytree(tiny_model_dir(), tmp_path / "broken")
    weights = load_file(broken / "model.safetensors")
    name = next(k for k in weights if "embed_tokens" in k)  # tied: the output layer too
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})

    state = AppState(load_settings({}, home=str(tmp_path / "home")), DEMO_REPO, snapshot=broken)
    with serve_app(create_app(state)) as url:
        assert wait_ready(url)["status"] == "ready"  # it loads: the file is well formed
        r = chat(url, temperature=1.0, max_tokens=4)  # sampling from NaN probabilities fails in torch
        assert r.status_code == 500, r.text
        err = r.json()["error"]
        assert err["code"] == "generation-failed" and "generation failed:" in err["message"]
        assert err["type"] == "server_error"
        # The worker survives: the server still answers, and fails the same way again.
        assert health(url).json()["status"] == "ready"
        assert chat(url, temperature=1.0, max_tokens=4).json()["error"]["code"] == "generation-failed"


def sse_data(r: httpx.Response) -> list[Any]:
    return [json.loads(line[6:]) if line != "data: [DONE]" else "[DONE]"
            for line in r.iter_lines() if line.startswith("data: ")]


def test_a_chat_worker_killed_mid_generation_fails_its_request_then_restarts(tmp_path: Path) -> None:
    # A restart after 3 s, and requests that wait at most 0.3 s: the window is seen from outside.
    options = WorkerOptions(restart=RestartPolicy(backoff=(3.0,)))
    state = AppState(load_settings({}, home=str(tmp_path / "home")), DEMO_REPO, snapshot=tiny_model_dir(),
                     workers=options, ready_wait=0.3)
    with serve_app(create_app(state)) as url:
        first = wait_ready(url)["engines"]["chat"]["pid"]
        body = {"model": DEMO_REPO, "messages": [{"role": "user", "content": "Hello"}], "stream": True,
                "max_tokens": 480, "ignore_eos": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r:
            chunks: list[Any] = []
            for line in r.iter_lines():
                if line.startswith("data: "):
                    chunks.append(json.loads(line[6:]) if line != "data: [DONE]" else "[DONE]")
                if len(chunks) == 4:
                    os.kill(first, signal.SIGKILL)
        assert chunks[-1] == "[DONE]"
        err = chunks[-2]["error"]
        assert err["code"] == "engine-crashed", chunks[-3:]
        assert "killed by SIGKILL (signal 9)" in err["message"] and DEMO_REPO in err["message"]
        # While it restarts: /health 503 "restarting", and a request is told so within its bound.
        r = health(url)
        assert r.status_code == 503 and r.json()["status"] == "restarting", r.text
        assert "SIGKILL" in r.json()["engines"]["chat"]["last_exit"]
        r = chat(url, temperature=0)
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine-unavailable", r.text
        assert "restarting" in r.json()["error"]["message"] and r.headers["retry-after"]
        # Then it is back, in a new process, and answers.
        back = wait_ready(url)
        assert back["status"] == "ready" and back["engines"]["chat"]["pid"] not in (None, first)
        assert back["engines"]["chat"]["restarts"] == 1
        r = chat(url, temperature=0)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == HELLO


def test_a_worker_that_may_not_restart_leaves_health_503_with_the_cause(tmp_path: Path) -> None:
    options = WorkerOptions(restart=RestartPolicy(max_restarts=0))
    state = AppState(load_settings({}, home=str(tmp_path / "home")), DEMO_REPO, snapshot=tiny_model_dir(),
                     workers=options)
    with serve_app(create_app(state)) as url:
        os.kill(wait_ready(url)["engines"]["chat"]["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (body := health(url).json())["status"] == "ready":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert body["status"] == "error" and body["engines"]["chat"]["state"] == "failed"
        assert health(url).status_code == 503
        assert body["error"]["code"] == "engine-crashed" and "gave up after 0 restarts" in body["error"]["message"]
        r = chat(url, temperature=0)
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine-crashed"
        assert "killed by SIGKILL" in r.json()["error"]["message"]


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
        body = wait_ready(f"http://127.0.0.1:{port}")
        pid = body["pid"]
        workers = [engine["pid"] for engine in body["engines"].values()]
        assert workers and all(workers)
        os.kill(pid, signal.SIGKILL)
        t.join(60)
        assert not t.is_alive(), out.text()
    finally:
        stop.set()
        t.join(30)
    deadline = time.monotonic() + 30
    for worker in workers:  # the server's workers die with it: their socket to it closed
        while running(worker):
            assert time.monotonic() < deadline, f"worker {worker} outlived its server"
            time.sleep(0.1)
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


# Qwen3's own chat template refuses a conversation without a user turn, in these words.
REFUSING_TEMPLATE = (
    "{%- set ns = namespace(user=false) %}"
    "{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.user = true %}{%- endif %}{%- endfor %}"
    "{%- if not ns.user %}{{- raise_exception('No user query found in messages.') }}{%- endif %}"
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def test_messages_the_models_template_refuses_get_a_400_invalid_messages(tmp_path: Path) -> None:
    model = shutil.copytree(tiny_model_dir(), tmp_path / "strict")
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = REFUSING_TEMPLATE
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    state = AppState(load_settings({}, home=str(tmp_path / "home")), DEMO_REPO, snapshot=model)
    with serve_app(create_app(state)) as url:
        assert wait_ready(url)["status"] == "ready"
        for stream in (False, True):
            r = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
                "model": DEMO_REPO, "stream": stream, "messages": [{"role": "system", "content": "Be brief."}]})
            assert r.status_code == 400, r.text  # before any stream starts
            err = r.json()["error"]
            assert err["code"] == "invalid-messages" and "No user query found in messages." in err["message"]
            assert err["hint"]
        assert chat(url, temperature=0, max_tokens=4).status_code == 200
