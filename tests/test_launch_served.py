"""``qwenhome launch`` and what it hands the server: the sources it was given
(a pull from the page uses them), one ready line with the URL once every
engine can answer, and clear refusals of options that cannot work."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import httpx
import pytest

from qwenhome.app.launch import free_port, run_launch
from qwenhome.config import load_settings
from qwenhome.errors import UsageError
from tests.app_support.servers import Tee, wait_ready
from tests.app_support.tiny import seed_demo_repos
from tests.support.cli import RunCli
from tests.support.mirror import Mirror
from tests.support.repos import GeneratedRepo


@pytest.fixture
def demo_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    seed_demo_repos(home)
    return home


def test_a_pull_from_the_page_uses_the_launchs_sources_and_ready_is_one_line(
    demo_home: Path, mirror: Mirror, small_repo: GeneratedRepo
) -> None:
    settings = load_settings({}, home=str(demo_home), sources=[mirror.url])
    # Anything but the given source would be this dead endpoint.
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out, ready, stop = Tee(), threading.Event(), threading.Event()
    t = threading.Thread(target=lambda: run_launch(
        settings, demo=True, engine="transformers", port=port, base_env=env, out=out,
        ready=lambda _u: ready.set(), stop=stop, sources=[mirror.url]), daemon=True)
    t.start()
    try:
        assert ready.wait(240), out.text()
        # Ready means ready: every served engine answers, and the line says where.
        assert wait_ready(url)["status"] == "ready"
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        lines = [line for line in out.text().splitlines() if line.startswith("qwenhome: ready in ")]
        assert len(lines) == 1 and f"open {url}/" in lines[0] and f"{url}/v1" in lines[0], out.text()
        job = httpx.post(f"{url}/api/models/pull", json={"repo": "Org/Small"}, timeout=30).json()
        events = []
        with httpx.stream("GET", f"{url}{job['events']}", timeout=120) as r:
            events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1]["event"] == "result", events[-1]
        assert events[-1]["downloaded_bytes"] == small_repo.total_size
        assert mirror.faults.records(path="/api/models/Org/Small/revision/main")
    finally:
        stop.set()
        t.join(60)


def test_launch_refuses_demo_with_another_model(demo_home: Path) -> None:
    with pytest.raises(UsageError) as info:
        run_launch(load_settings({}, home=str(demo_home)), demo=True, model="Org/Other", port=free_port(), out=Tee())
    assert info.value.code == "usage" and "--demo serves its own model" in info.value.message


def test_launch_with_vllm_that_is_not_installed_says_what_is_missing(demo_home: Path) -> None:
    env = {**os.environ, "PATH": str(demo_home / "no-bin")}
    with pytest.raises(UsageError) as info:
        run_launch(load_settings({}, home=str(demo_home)), demo=True, engine="vllm", port=free_port(),
                   base_env=env, out=Tee())
    assert info.value.code == "missing-component" and "vllm" in info.value.hint


def test_an_impossible_body_limit_is_refused_by_the_cli(run_cli: RunCli, tmp_path: Path) -> None:
    res = run_cli(["launch", "--demo", "--max-body-mib", "0", "--port", str(free_port())])
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error[invalid-body-limit]:")
