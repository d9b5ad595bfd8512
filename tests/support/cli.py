"""Run the qwenhome CLI as a real subprocess with a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Passed through from the test process; everything else (HF_*, proxies, tokens,
# the user's caches) is left out so tests never touch the real home or network.
_PASS_THROUGH = ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    def __iter__(self):  # type: ignore[no-untyped-def]
        """Unpack as ``rc, out, err = run_cli(...)``."""
        return iter((self.returncode, self.stdout, self.stderr))


# The type of the ``run_cli`` fixture: run_cli(args, endpoint=, env=, timeout=, home=) -> CliResult.
RunCli = Callable[..., CliResult]


def clean_env(home: Path, endpoint: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a child process: QWEN_HOME=home, HOME beside it,
    HF_ENDPOINT=endpoint (if given), no inherited HF/proxy/token variables."""
    env = {k: os.environ[k] for k in _PASS_THROUGH if k in os.environ}
    user_home = home.parent / f"{home.name}-user"
    user_home.mkdir(parents=True, exist_ok=True)
    env.update({
        "HOME": str(user_home),
        "QWEN_HOME": str(home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONUNBUFFERED": "1",
        "NO_PROXY": "*",
    })
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src
    if endpoint is not None:
        env["HF_ENDPOINT"] = endpoint
    env.update(extra or {})
    return env


def run_cli(args: Sequence[str], *, home: Path, endpoint: str | None = None,
            env: Mapping[str, str] | None = None, timeout: float = 120.0,
            cwd: Path | None = None, input: str | None = None) -> CliResult:
    """``python -m qwenhome ARGS`` in a clean environment; never raises on a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, "-m", "qwenhome", *args],
        env=clean_env(home, endpoint, env), cwd=cwd or home.parent, input=input,
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def start_cli(args: Sequence[str], *, home: Path, endpoint: str | None = None,
              env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``python -m qwenhome ARGS`` (e.g. a server) in the background; the caller
    stops it (``send_signal(SIGINT)``) and waits."""
    return subprocess.Popen(
        [sys.executable, "-m", "qwenhome", *args],
        env=clean_env(home, endpoint, env), cwd=home.parent,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
