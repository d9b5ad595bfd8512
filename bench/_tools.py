"""How the transfer benchmark invokes each tool, and where each leaves the files.

Every tool runs as its own process in a fresh folder (``run_dir``); the
benchmark times the process and then checks the folder :func:`Tool.output`
names against the expected sha256 of every file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import BENCH, clean_env

TOOL_NAMES = ("qwenhome", "qwenhome-16", "hf_hub", "hf_transfer", "aria2c", "curl")
# qwenhome-16: qwenhome held to aria2c's 16 connections, beside its adaptive count
HELD_CONNECTIONS = ("--connections", "16")

# hfd.sh-style aria2c, with the connection counts the issue names; -j runs files in parallel.
ARIA2_ARGS = ("-x16", "-s16", "-k1M", "-j16", "--file-allocation=none")


@dataclass(frozen=True)
class Invocation:
    argv: list[str]
    env: dict[str, str]
    output: Callable[[], Path]  # the folder holding the repository's files afterwards


def _hub_snapshot(cache: Path, repo_id: str) -> Path:
    snaps = sorted((cache / f"models--{repo_id.replace('/', '--')}" / "snapshots").glob("*"))
    return snaps[-1] if snaps else cache / "missing-snapshot"


def qwenhome(endpoint: str, repo_id: str, files: Sequence[str], run_dir: Path,
             extra: Sequence[str] = ()) -> Invocation:
    home = run_dir / "home"
    env = clean_env({"QWEN_HOME": str(home), "HOME": str(run_dir / "user")})
    argv = [sys.executable, "-m", "qwenhome", "pull", repo_id, "--source", endpoint, *extra]
    return Invocation(argv, env, lambda: _hub_snapshot(home / "hub", repo_id))


def hf_hub(endpoint: str, repo_id: str, files: Sequence[str], run_dir: Path) -> Invocation:
    cache = run_dir / "cache"
    env = clean_env({"HF_HOME": str(run_dir / "hf-home"), "HF_HUB_DISABLE_XET": "1",
                     "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                     "HOME": str(run_dir / "user")})
    argv = [sys.executable, str(BENCH / "_clients.py"), "hf_hub", endpoint, repo_id, str(cache)]
    return Invocation(argv, env, lambda: _hub_snapshot(cache, repo_id))


def hf_transfer(endpoint: str, repo_id: str, files: Sequence[str], run_dir: Path) -> Invocation:
    out = run_dir / "out"
    argv = [sys.executable, str(BENCH / "_clients.py"), "hf_transfer", endpoint, repo_id, str(out)]
    return Invocation(argv, clean_env({"HOME": str(run_dir / "user")}), lambda: out)


def _url(endpoint: str, repo_id: str, rel: str) -> str:
    return f"{endpoint.rstrip('/')}/{repo_id}/resolve/main/{rel}"


def aria2c(endpoint: str, repo_id: str, files: Sequence[str], run_dir: Path) -> Invocation:
    """Given the URLs (as hfd.sh builds them from one metadata request, not timed here)."""
    out = run_dir / "out"
    run_dir.mkdir(parents=True, exist_ok=True)
    listing = run_dir / "aria2-input.txt"
    listing.write_text("".join(f"{_url(endpoint, repo_id, rel)}\n  out={rel}\n" for rel in files))
    ca = [f"--ca-certificate={os.environ['SSL_CERT_FILE']}"] if os.environ.get("SSL_CERT_FILE") else []
    argv = ["aria2c", *ARIA2_ARGS, *ca, "--console-log-level=warn", "--summary-interval=0",
            "--download-result=hide", "--auto-file-renaming=false", "--allow-overwrite=true",
            "-d", str(out), "-i", str(listing)]
    return Invocation(argv, clean_env({"HOME": str(run_dir / "user")}), lambda: out)


def curl(endpoint: str, repo_id: str, files: Sequence[str], run_dir: Path) -> Invocation:
    """The single-stream reference: one process, files one after another on one connection."""
    out = run_dir / "out"
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "curl.cfg"
    config.write_text("".join(f'url = "{_url(endpoint, repo_id, rel)}"\noutput = "{out / rel}"\n'
                              for rel in files))
    argv = ["curl", "--silent", "--show-error", "--fail", "--location", "--create-dirs", "--noproxy", "*",
            "-K", str(config)]
    return Invocation(argv, clean_env({"HOME": str(run_dir / "user")}), lambda: out)


def invocation(tool: str, endpoint: str, repo_id: str, files: Sequence[str], run_dir: Path,
               qwenhome_args: Sequence[str] = ()) -> Invocation:
    if tool == "qwenhome":
        return qwenhome(endpoint, repo_id, files, run_dir, qwenhome_args)
    if tool == "qwenhome-16":
        return qwenhome(endpoint, repo_id, files, run_dir, [*qwenhome_args, *HELD_CONNECTIONS])
    makers = {"hf_hub": hf_hub, "hf_transfer": hf_transfer, "aria2c": aria2c, "curl": curl}
    return makers[tool](endpoint, repo_id, files, run_dir)


def missing(tool: str) -> str | None:
    """Why ``tool`` cannot run here (and how to install it), or None."""
    if tool == "aria2c" and shutil.which("aria2c") is None:
        return "aria2c not installed (apt-get install aria2)"
    if tool == "curl" and shutil.which("curl") is None:
        return "curl not installed (apt-get install curl)"
    module = {"hf_hub": "huggingface_hub", "hf_transfer": "hf_transfer"}.get(tool)
    if module is not None:
        probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
        if probe.returncode != 0:
            return f"{module} not installed (pip install {module})"
    return None


def versions() -> dict[str, str]:
    """Versions of every peer, for the JSON report."""
    found: dict[str, str] = {"python": sys.version.split()[0]}
    probe = ("import importlib.metadata as m\n"
             "for p in ('qwenhome', 'huggingface_hub', 'hf_transfer'):\n"
             "    try: print(p, m.version(p))\n"
             "    except Exception: print(p, 'missing')\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=clean_env()).stdout
    for line in out.splitlines():
        name, _, version = line.partition(" ")
        found[name] = version
    for exe in ("aria2c", "curl"):
        if shutil.which(exe):
            first = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
            found[exe] = first.splitlines()[0] if first else "?"
    return found
