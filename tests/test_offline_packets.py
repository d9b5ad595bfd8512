"""Offline is offline: ``launch --demo`` and ``pull`` with ``--offline`` or
``HF_HUB_OFFLINE=1`` send not one packet.

Each command runs in its own network namespace whose only way out is a tun
device nobody reads (tests/support/netns.py): a packet meant for another
machine is counted there and goes nowhere, so these tests send nothing even
when they fail. Under strace as well (when installed), the failure names the
calls. The home holds nothing but the demo's repositories; the sources are
the defaults (huggingface.co), so any lookup the code still made would show.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from qwenhome.app.launch import free_port
from tests.app_support.tiny import seed_demo_repos
from tests.support.cli import clean_env
from tests.support.netns import netns_unavailable, run_isolated

pytestmark = pytest.mark.skipif(bool(netns_unavailable()), reason=str(netns_unavailable()))

QWENHOME = [sys.executable, "-m", "qwenhome"]


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("offline-packets") / "home"
    seed_demo_repos(home)  # the demo still serves them from its mirror on 127.0.0.1 and pulls them
    return home


def test_the_namespace_counts_a_lookup_that_tries_to_leave(tmp_path: Path) -> None:
    """The check itself can fail: one name lookup is seen, as packets and as a call."""
    code = "import socket\ntry:\n    socket.getaddrinfo('huggingface.co', 443)\nexcept OSError:\n    pass\n"
    env = clean_env(tmp_path / "home", extra={"RES_OPTIONS": "timeout:1 attempts:1"})  # glibc: give up at once
    result = run_isolated([sys.executable, "-c", code], env, cwd=tmp_path, timeout=60)
    assert result.packets > 0, result.output
    if result.traced:
        assert result.remote_calls, result.output


@pytest.mark.timeout(600)
@pytest.mark.parametrize("how", ["--offline", "HF_HUB_OFFLINE=1"])
def test_launch_demo_offline_sends_no_packet(demo_home: Path, how: str) -> None:
    port = free_port()
    flags = ["--offline"] if how == "--offline" else []
    env = clean_env(demo_home, extra={"HF_HUB_OFFLINE": "1"} if how != "--offline" else None)
    url = f"http://127.0.0.1:{port}"
    result = run_isolated([*QWENHOME, "launch", "--demo", *flags, "--port", str(port)], env,
                          cwd=demo_home.parent, ready_url=f"{url}/health", timeout=400)
    assert result.ready and result.returncode == 0, result.output
    assert result.packets == 0 and not result.remote_calls, result.leaks()
    # Quiet about hosts the demo does not need; nothing claimed about the home that is false.
    for phrase in ("dns-resolution-failed", "filtered or hijacked", "would be downloaded again"):
        assert phrase not in result.output, result.output
    assert "doctor: ok" in result.output, result.output


@pytest.mark.parametrize("how", ["--offline", "HF_HUB_OFFLINE=1"])
def test_pull_offline_sends_no_packet(demo_home: Path, how: str) -> None:
    flags = ["--offline"] if how == "--offline" else []
    env = clean_env(demo_home, extra={"HF_HUB_OFFLINE": "1"} if how != "--offline" else None)
    missing = run_isolated([*QWENHOME, "pull", *flags, "Qwen/Qwen2.5-0.5B-Instruct"], env,
                           cwd=demo_home.parent, timeout=120)
    assert missing.returncode == 8 and "offline" in missing.output, missing.output  # EXIT_OFFLINE
    assert missing.packets == 0 and not missing.remote_calls, missing.leaks()
    doctor = run_isolated([*QWENHOME, "doctor", "--offline"], env, cwd=demo_home.parent, timeout=120)
    assert doctor.output.startswith("ok"), doctor.output
    assert doctor.packets == 0 and not doctor.remote_calls, doctor.leaks()
