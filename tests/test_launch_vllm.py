"""The vLLM path without a GPU: a fake ``vllm`` on PATH that speaks the same
command line and API. Proves the command line, the home variables it gets,
the proxying (streaming and not), and the restart of a crashed engine."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from qwenhome.app.launch import free_port, run_launch
from qwenhome.app.supervisor import RestartPolicy
from qwenhome.app.vllm_engine import vllm_command
from qwenhome.config import load_settings
from qwenhome.demo import DEMO_REPO
from tests.app_support.servers import Tee, wait_ready
from tests.app_support.tiny import seed_demo_repos

FAKE = Path(__file__).parent / "app_support" / "fake_vllm.py"


@dataclass
class Launched:
    url: str
    home: Path
    log: Path
    out: Tee

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def starts(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("start")]


def test_vllm_command_serves_the_snapshot_path_under_the_repo_name(tmp_path: Path) -> None:
    snap = tmp_path / "hub" / "models--Qwen--Qwen2.5-0.5B-Instruct" / "snapshots" / ("a" * 40)
    argv = vllm_command(["vllm"], snap, "Qwen/Qwen2.5-0.5B-Instruct", port=9001,
                        extra=["--tensor-parallel-size", "2"])
    assert argv == ["vllm", "serve", str(snap), "--host", "127.0.0.1", "--port", "9001",
                    "--served-model-name", "Qwen/Qwen2.5-0.5B-Instruct", "--tensor-parallel-size", "2"]


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    root = tmp_path_factory.mktemp("vllm")
    home = root / "home"
    seed_demo_repos(home)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "vllm"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    log = root / "fake-vllm.jsonl"
    base_env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "FAKE_VLLM_LOG": str(log),
                "HF_HUB_ENABLE_HF_TRANSFER": "1"}
    settings = load_settings({}, home=str(home))
    port = free_port()
    out = Tee()
    stop = threading.Event()
    ready = threading.Event()
    result: list[int] = []
    policy = RestartPolicy(max_restarts=2, backoff=(0.2,), stable_after=60)

    def run() -> None:
        result.append(run_launch(settings, demo=True, engine="vllm", port=port, base_env=base_env,
                                 vllm_args=["--tensor-parallel-size", "1"], policy=policy, out=out,
                                 ready=lambda _url: ready.set(), stop=stop))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    # Ready once every engine answers: vLLM, and the demo's image model loaded in its worker.
    deadline = time.monotonic() + 180
    while not ready.is_set():
        assert t.is_alive(), out.text()
        assert time.monotonic() < deadline, out.text()
        time.sleep(0.05)
    try:
        yield Launched(f"http://127.0.0.1:{port}", home, log, out)
    finally:
        stop.set()
        t.join(30)
    assert result == [0], out.text()
    # Everything it started is gone.
    for rec in [json.loads(line) for line in log.read_text().splitlines() if '"start"' in line]:
        with pytest.raises(ProcessLookupError):
            os.kill(rec["pid"], 0)


def test_vllm_gets_the_snapshot_path_and_the_home_variables(launched: Launched) -> None:
    start = launched.starts()[0]
    snap = Path(start["argv"][1])
    assert start["argv"][0] == "serve"
    assert snap.is_dir() and snap.is_relative_to(launched.home / "hub")
    assert start["argv"][start["argv"].index("--served-model-name") + 1] == DEMO_REPO
    assert start["extra"] == ["--tensor-parallel-size", "1"]
    env = start["env"]
    assert env["FAKE_VLLM_LOG"] == str(launched.log), "the whole environment is logged"
    assert env["HF_HUB_CACHE"] == str(launched.home / "hub")
    assert env["HF_HOME"] == str(launched.home)
    assert env["HF_HUB_OFFLINE"] == "1"
    # The deprecated switch from the user's environment is not passed on.
    assert "HF_HUB_ENABLE_HF_TRANSFER" not in env


def test_chat_is_proxied_to_vllm_streaming_and_not(launched: Launched) -> None:
    client = openai.OpenAI(base_url=f"{launched.url}/v1", api_key="x", max_retries=0)
    r = client.chat.completions.create(model=DEMO_REPO, messages=[{"role": "user", "content": "hi"}],
                                       seed=5, stop=["zzz"], max_tokens=9)
    assert r.choices[0].message.content == "Hello from the fake vLLM server."
    pieces = [c.choices[0].delta.content for c in client.chat.completions.create(
        model=DEMO_REPO, messages=[{"role": "user", "content": "hi"}], stream=True) if c.choices and c.choices[0].delta.content]
    assert pieces == ["Hello", " from", " the", " fake", " vLLM", " server."]
    forwarded = [r["request"] for r in launched.records() if "request" in r]
    assert forwarded[0]["seed"] == 5 and forwarded[0]["stop"] == ["zzz"] and forwarded[0]["max_tokens"] == 9
    health = wait_ready(launched.url)
    assert health["engine"]["engine"] == "vllm"


def test_a_crashed_vllm_is_restarted_and_the_reason_is_shown(launched: Launched) -> None:
    first = launched.starts()[-1]["pid"]
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(launched.starts()) < 2 or launched.starts()[-1]["pid"] == first:
        assert time.monotonic() < deadline, launched.out.text()
        time.sleep(0.05)
    text = launched.out.text()
    assert "vllm killed by SIGKILL" in text and "restarting" in text
    client = openai.OpenAI(base_url=f"{launched.url}/v1", api_key="x", max_retries=3)
    deadline = time.monotonic() + 20
    while True:
        try:
            r = client.chat.completions.create(model=DEMO_REPO, messages=[{"role": "user", "content": "hi"}])
            break
        except openai.APIStatusError as exc:
            assert exc.status_code == 503 and time.monotonic() < deadline
            time.sleep(0.2)
    assert r.choices[0].message.content == "Hello from the fake vLLM server."


def test_the_model_vllm_serves_cannot_be_switched_from_the_api(launched: Launched) -> None:
    r = httpx.post(f"{launched.url}/api/served", json={"chat": DEMO_REPO}, timeout=30)
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "switch-unsupported" and "--model" in err["hint"]
