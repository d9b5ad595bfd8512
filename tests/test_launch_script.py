"""``scripts/launch_complete_system.sh``: when it installs, what, and what it
says about the CLI. The script runs for real; its .venv is a stand-in whose
``python`` answers the script's module check from a folder of empty
packages (so a missing one can be chosen) and records a ``pip install``
instead of running it (a real install needs the package registry), and whose
``qwenhome`` records the launch. The real install and launch from a fresh
.venv run in tests/test_launch_demo.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwenhome.cli import cli_hint
from qwenhome.demo import DEMO_IMAGE_REPO
from qwenhome.images.tiny import TINY_REPO_ID

REPO_ROOT = Path(__file__).resolve().parents[1]
MODULES = ("qwenhome", "fastapi", "uvicorn", "torch", "transformers", "diffusers", "accelerate", "PIL",
           "python_multipart")


def checkout(tmp_path: Path, *, missing: tuple[str, ...] = (), stamp: bool = True) -> Path:
    root = tmp_path / "clone"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "scripts" / "launch_complete_system.sh", root / "scripts")
    shutil.copy2(REPO_ROOT / "pyproject.toml", root)
    mods = tmp_path / "modules"
    for name in MODULES:
        if name not in missing:
            (mods / name).mkdir(parents=True)
            (mods / name / "__init__.py").write_text("")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls.log"
    (bin_dir / "python").write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "pip $*" >> "{log}"; exit 0; fi\n'
        f'PYTHONPATH="{mods}" exec "{sys.executable}" -S "$@"\n')
    (bin_dir / "qwenhome").write_text(
        f'#!/bin/sh\necho "qwenhome $*" >> "{log}"\n'
        f'echo "bytecode: ${{PYTHONDONTWRITEBYTECODE-unset}} ${{PYTHONPYCACHEPREFIX-unset}}" >> "{log}"\n')
    for exe in ("python", "qwenhome"):
        (bin_dir / exe).chmod(0o755)
    if stamp:
        (root / ".venv" / ".qwenhome-installed").touch()
        past = time.time() - 60
        os.utime(root / "pyproject.toml", (past, past))
    return root


def run(root: Path, tmp_path: Path, env: dict[str, str] | None = None) -> tuple[str, list[str]]:
    proc = subprocess.run(["bash", str(root / "scripts" / "launch_complete_system.sh"), "--demo", "--port", "1"],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **(env or {})})
    assert proc.returncode == 0, proc.stderr
    log = tmp_path / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return proc.stderr, [line for line in lines if not line.startswith("bytecode: ")]


def bytecode_env(tmp_path: Path) -> str:
    return next(line for line in (tmp_path / "calls.log").read_text().splitlines() if line.startswith("bytecode: "))


def test_an_installed_venv_starts_at_once(tmp_path: Path) -> None:
    err, calls = run(checkout(tmp_path), tmp_path)
    assert calls == ["qwenhome launch --demo --port 1"], calls
    assert "installing" not in err and "installed" not in err


@pytest.mark.parametrize("missing", ["diffusers", "accelerate", "PIL", "python_multipart", "torch", "qwenhome"])
def test_a_venv_without_a_module_the_image_path_or_chat_needs_is_installed_again(
        tmp_path: Path, missing: str) -> None:
    """A .venv from before the images extra (or broken) is completed, not used as is."""
    err, calls = run(checkout(tmp_path, missing=(missing,)), tmp_path)
    assert calls[0] == "pip -m pip install -q --no-compile --disable-pip-version-check -e .[app,engine,images]"
    assert calls[1] == "qwenhome launch --demo --port 1"
    assert "installing qwenhome[app,engine,images] into .venv (first run only)" in err
    assert "installed; the CLI is .venv/bin/qwenhome (or `source .venv/bin/activate`, then `qwenhome --help`)" in err


def test_no_stamp_or_a_newer_pyproject_installs(tmp_path: Path) -> None:
    err, calls = run(checkout(tmp_path / "a", stamp=False), tmp_path / "a")
    assert calls[0].startswith("pip ") and (tmp_path / "a" / "clone" / ".venv" / ".qwenhome-installed").exists()
    root = checkout(tmp_path / "b")
    (root / "pyproject.toml").touch()  # edited after the last install
    err, calls = run(root, tmp_path / "b")
    assert calls[0].startswith("pip ") and "installing" in err


def test_launch_says_where_the_cli_is_when_it_is_not_on_the_path(tmp_path: Path) -> None:
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "qwenhome").write_text("#!/bin/sh\n")
    (venv / "bin" / "qwenhome").chmod(0o755)
    hint = cli_hint(str(venv), "/usr", "/usr/bin:/bin")
    assert hint == f"the CLI is {venv}/bin/qwenhome (or `source {venv}/bin/activate`, then `qwenhome --help`)"
    assert cli_hint(str(venv), "/usr", f"{venv}/bin:/usr/bin") is None  # activated: `qwenhome` is it
    assert cli_hint("/usr", "/usr", "/usr/bin") is None  # not a virtualenv


def test_bytecode_is_cached_under_the_venv_even_where_the_shell_forbids_it(tmp_path: Path) -> None:
    """Without the cache every start compiles torch, transformers and diffusers again."""
    root = checkout(tmp_path / "a")
    run(root, tmp_path / "a", {"PYTHONDONTWRITEBYTECODE": "1"})
    assert bytecode_env(tmp_path / "a") == f"bytecode: unset {root}/.venv/pycache"
    run(checkout(tmp_path / "b"), tmp_path / "b")  # the default (write beside the modules) is left alone
    assert bytecode_env(tmp_path / "b") == "bytecode: unset unset"


def test_the_demo_label_names_the_image_model_the_demo_builds() -> None:
    assert DEMO_IMAGE_REPO == TINY_REPO_ID
