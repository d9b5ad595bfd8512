"""``scripts/launch_complete_system.sh --demo`` and ``qwenhome launch``, as a
user runs them: a fresh ``.venv``, the demo model served from a local mirror
and pulled, a chat over HTTP, Ctrl+C, then a second start that is instant and
offline; and the supervisor restarting a killed server."""

from __future__ import annotations

import os
import shutil
import signal
import site
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from qwenhome.app.launch import free_port, run_launch
from qwenhome.app.supervisor import RestartPolicy
from qwenhome.config import load_settings
from qwenhome.demo import DEMO_IMAGE_REPO, DEMO_REPO
from qwenhome.errors import UsageError
from tests.app_support.servers import Tee, wait_ready
from tests.app_support.tiny import seed_demo_repos

REPO_ROOT = Path(__file__).resolve().parents[1]
HELLO = "Hello! I am a tiny model running from your qwenhome, fully offline."


def copy_checkout(dest: Path) -> Path:
    """What a fresh clone holds, without the developer's .venv."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in ("src", "scripts"):
        shutil.copytree(REPO_ROOT / name, dest / name, ignore=ignore)
    return dest


def fresh_venv_with_dependencies(checkout: Path) -> None:
    """A new, empty ``.venv`` whose dependencies (torch, transformers, fastapi…)
    are visible through a .pth file, so the script's ``pip install -e`` finds
    them satisfied instead of unpacking torch on every test run. qwenhome
    itself is not visible: the script has to install it."""
    subprocess.run([sys.executable, "-m", "venv", str(checkout / ".venv")], check=True)
    deps = checkout / "deps"
    deps.mkdir()
    for sp in site.getsitepackages():
        for entry in Path(sp).iterdir():
            low = entry.name.lower()
            if low.startswith(("qwenhome", "__editable__", "_qwenhome")) or low.endswith(".pth"):
                continue
            if not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (checkout / ".venv" / "lib" / pyver / "site-packages" / "_test_deps.pth").write_text(f"{deps}\n")


def user_env(home: Path) -> dict[str, str]:
    """The user's shell: their own PATH, a home, and a Hub endpoint that does
    not answer (the demo must never need it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "QWEN_", "HUGGING", "TRANSFORMERS_"))}
    env.pop("VIRTUAL_ENV", None)
    env.update(QWEN_HOME=str(home), HF_ENDPOINT="http://127.0.0.1:9", PYTHONUNBUFFERED="1")
    return env


def start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)


def wait_for_chat(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> float:
    """Seconds until /health is ready and a chat answer came back."""
    t0 = time.monotonic()
    while True:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() - t0 < timeout, log.read_text()
        try:
            if httpx.get(f"{url}/health", timeout=1).json().get("status") == "ready":
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    r = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
        "model": DEMO_REPO, "messages": [{"role": "user", "content": "Hello"}], "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == HELLO
    return time.monotonic() - t0


def stop_with_ctrl_c(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    server_pid = httpx.get(f"{url}/health", timeout=5).json()["pid"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0, log.read_text()
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)


@pytest.mark.timeout(420)
def test_launch_script_demo_on_a_fresh_venv_then_a_second_start_is_instant_and_offline(tmp_path: Path) -> None:
    checkout = copy_checkout(tmp_path / "clone")
    fresh_venv_with_dependencies(checkout)
    home = tmp_path / "home"
    seed_demo_repos(home)  # skips only the training step; mirror + pull still run
    env = user_env(home)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    script = ["bash", str(checkout / "scripts" / "launch_complete_system.sh"), "--demo", "--port", str(port)]

    log1 = tmp_path / "first.log"
    first = start(script, env, log1, checkout)
    try:
        wait_for_chat(url, first, log1, timeout=300)
        stop_with_ctrl_c(first, url, log1)
    finally:
        first.kill()
    out1 = log1.read_text()
    assert "installing qwenhome[app,engine,images]" in out1
    assert "serving it from a local mirror" in out1 and "pulling" in out1
    assert (checkout / ".venv" / "bin" / "qwenhome").exists()
    assert "installed; the CLI is .venv/bin/qwenhome (or `source .venv/bin/activate`" in out1
    assert f"the CLI is {checkout}/.venv/bin/qwenhome" in out1.split("ready in", 1)[1]  # again once ready

    log2 = tmp_path / "second.log"
    second = start(script, env, log2, checkout)
    try:
        seconds = wait_for_chat(url, second, log2, timeout=120)
        check_both_panels_and_demo_labels(url)
        stop_with_ctrl_c(second, url, log2)
    finally:
        second.kill()
    out2 = log2.read_text()
    # Nothing installed, built, served or pulled again: the model is in the home.
    for phrase in ("installing", "building", "local mirror", "pulling"):
        assert phrase not in out2, out2
    print(f"second start to first chat reply: {seconds:.1f} s")
    assert seconds < 30, out2  # the goal is 10 s on an idle machine; CI shares its cores


def check_both_panels_and_demo_labels(url: str) -> None:
    """The page has chat and the Images panel; the API says the demo's models are stand-ins."""
    info = httpx.get(f"{url}/api/info", timeout=10).json()
    assert info["demo"] is True and "handful of answers" in info["note"], info
    images = [e for e in info["extensions"] if e["name"] == "images"]
    assert images and httpx.get(url + images[0]["script"], timeout=10).status_code == 200, info
    status = httpx.get(f"{url}/api/images/status", timeout=10).json()
    assert status["model"] == DEMO_IMAGE_REPO and status["demo"] is True, status
    assert "random weights" in status["note"] and "noise" in status["note"], status
    models = {m["repo"]: m for m in httpx.get(f"{url}/api/models", timeout=10).json()["models"]}
    assert models[DEMO_REPO]["demo"] is True and models[DEMO_IMAGE_REPO]["demo"] is True, models
    assert all("demo" not in m for repo, m in models.items() if repo not in (DEMO_REPO, DEMO_IMAGE_REPO))


@pytest.fixture
def demo_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    seed_demo_repos(home)
    return home


def test_a_killed_server_is_restarted_and_the_reason_is_shown(demo_home: Path) -> None:
    settings = load_settings({}, home=str(demo_home))
    port = free_port()
    out = Tee()
    stop = threading.Event()
    ready = threading.Event()
    codes: list[int] = []
    policy = RestartPolicy(max_restarts=2, backoff=(0.2,))
    t = threading.Thread(target=lambda: codes.append(run_launch(
        settings, demo=True, engine="transformers", port=port, base_env=dict(os.environ), policy=policy,
        out=out, ready=lambda _u: ready.set(), stop=stop)), daemon=True)
    t.start()
    try:
        assert ready.wait(180), out.text()
        url = f"http://127.0.0.1:{port}"
        pid = wait_ready(url)["pid"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, out.text()
            try:
                body = httpx.get(f"{url}/health", timeout=1).json()
                if body["pid"] != pid and body["status"] == "ready":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert "server killed by SIGKILL" in out.text() and "restarting in 0.2 s" in out.text()
        assert "restarting server (restart 1 of 2)" in out.text()
        r = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
            "model": DEMO_REPO, "messages": [{"role": "user", "content": "Hello"}], "temperature": 0})
        assert r.json()["choices"][0]["message"]["content"] == HELLO
    finally:
        stop.set()
        t.join(30)
    assert codes == [0]


def test_launch_refuses_a_busy_port_before_doing_anything(demo_home: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(UsageError) as info:
            run_launch(load_settings({}, home=str(demo_home)), demo=True, port=port, out=Tee())
    assert info.value.code == "port-in-use"
    assert "--port" in info.value.hint


def test_an_engine_that_cannot_load_stops_the_launch_with_the_reason(demo_home: Path) -> None:
    from qwenhome.demo import ensure_demo_model
    from qwenhome.errors import QwenhomeError

    settings = load_settings({}, home=str(demo_home))
    snap = ensure_demo_model(settings)
    blob = (snap / "config.json").resolve()
    blob.chmod(0o644)
    blob.write_text("{ this is not json")
    out = Tee()
    t0 = time.monotonic()
    with pytest.raises(QwenhomeError) as info:
        run_launch(settings, demo=True, engine="transformers", port=free_port(), base_env=dict(os.environ), out=out)
    assert info.value.code in ("engine-load-failed", "server-start-failed")
    assert "engine-load-failed" in info.value.message or info.value.code == "engine-load-failed"
    assert "restarting" not in out.text()  # the same snapshot would fail the same way
    assert time.monotonic() - t0 < 120


def launch_in_thread(settings: object, **kwargs: object) -> tuple[threading.Thread, threading.Event, Tee, list[int]]:
    out = Tee()
    stop = threading.Event()
    ready = threading.Event()
    codes: list[int] = []
    t = threading.Thread(target=lambda: codes.append(run_launch(
        settings, out=out, ready=lambda _u: ready.set(), stop=stop, **kwargs)), daemon=True)  # type: ignore[arg-type]
    t.start()
    assert ready.wait(180) or not t.is_alive(), out.text()
    return t, stop, out, codes


def test_launch_pulls_a_missing_model_once_then_starts_offline_from_the_home(tmp_path: Path) -> None:
    from qwenhome.mirror import FolderBackend, MirrorServer
    from tests.app_support.tiny import tiny_model_dir

    repos = tmp_path / "repos"
    shutil.copytree(tiny_model_dir(), repos / "Test" / "Tiny")
    home = tmp_path / "home"
    with MirrorServer(FolderBackend(repos)).start() as mirror:
        settings = load_settings({}, home=str(home), sources=[mirror.url])
        port = free_port()
        t, stop, out, codes = launch_in_thread(settings, model="Test/Tiny", engine="transformers", port=port,
                                               base_env=dict(os.environ))
        try:
            text = out.text()
            assert "Test/Tiny is not in the home" in text and "pulling it once" in text
            assert wait_ready(f"http://127.0.0.1:{port}")["model"] == "Test/Tiny"
        finally:
            stop.set()
            t.join(30)
        assert codes == [0], out.text()
    # The mirror is gone and the settings say offline: the home is enough.
    offline = load_settings({}, home=str(home), sources=["http://127.0.0.1:9"], offline=True)
    t, stop, out, codes = launch_in_thread(offline, model="Test/Tiny", engine="transformers", port=port,
                                           base_env=dict(os.environ))
    try:
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60, json={
            "model": "Test/Tiny", "messages": [{"role": "user", "content": "Hello"}], "temperature": 0})
        assert r.json()["choices"][0]["message"]["content"] == HELLO
        assert "pulling" not in out.text()
    finally:
        stop.set()
        t.join(30)
    assert codes == [0], out.text()
