"""The complete system installed without the images extra (a real virtualenv
whose site-packages lack diffusers): chat is served, the image model in the
home is listed, and asking to serve it says what to install."""

from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path

import httpx

from qwenhome.config import load_settings
from qwenhome.demo import DEMO_REPO, ensure_demo_model
from qwenhome.images.demo import ensure_demo_image_model
from qwenhome.images.tiny import TINY_REPO_ID
from tests.app_support.servers import serve_process
from tests.app_support.tiny import seed_demo_repos

SRC = Path(__file__).resolve().parents[1] / "src"


def venv_without(dest: Path, *missing: str) -> Path:
    """A new virtualenv seeing this one's packages except ``missing``, and qwenhome's source."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    deps = dest / "deps"
    deps.mkdir()
    for sp in site.getsitepackages():
        for entry in Path(sp).iterdir():
            low = entry.name.lower()
            if low.startswith(("qwenhome", "__editable__", "_qwenhome", *missing)) or low.endswith(".pth"):
                continue
            if not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (dest / "lib" / pyver / "site-packages" / "_test_deps.pth").write_text(f"{deps}\n{SRC}\n")
    return dest / "bin" / "python"


def test_without_diffusers_chat_runs_and_serving_an_image_model_says_what_to_install(tmp_path: Path) -> None:
    python = venv_without(tmp_path / "venv", "diffusers")
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('diffusers'))"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "None"
    home = tmp_path / "home"
    seed_demo_repos(home)
    settings = load_settings({}, home=str(home))
    snapshot = ensure_demo_model(settings)
    ensure_demo_image_model(settings)
    with serve_process(home, snapshot, DEMO_REPO, workdir=tmp_path, python=str(python)) as server:
        assert httpx.get(f"{server.url}/api/info", timeout=30).json()["extensions"] == []
        models = {m["repo"]: (m["kind"], m["state"]) for m in httpx.get(f"{server.url}/api/served").json()["models"]}
        assert models == {DEMO_REPO: ("chat", "served"), TINY_REPO_ID: ("image", "available")}
        r = httpx.post(f"{server.url}/api/served", json={"image": TINY_REPO_ID}, timeout=30)
        assert r.status_code == 409, r.text
        err = r.json()["error"]
        assert err["code"] == "image-engine-missing" and "qwenhome[images]" in err["hint"]
        r = httpx.post(f"{server.url}/v1/chat/completions", timeout=60, json={
            "model": DEMO_REPO, "messages": [{"role": "user", "content": "Hello"}], "temperature": 0})
        assert r.status_code == 200, r.text
