"""``launch`` and ``mirror serve`` name the real reason they cannot listen:
a host that does not resolve, an address not on this machine, a port that
needs privileges, a port in use. Real processes, real sockets; nothing is sent
anywhere (every failure happens at bind time)."""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.cli import RunCli, clean_env

# A name the resolver rejects before asking any server (an empty label cannot
# be put in a DNS query), so no packet leaves the machine.
UNRESOLVABLE = "no..such.host"
# TEST-NET-2 (RFC 5737): never an address of this machine.
NOT_HERE = "198.51.100.7"

COMMANDS = {
    "launch": ["launch", "--offline"],
    "mirror": ["mirror", "serve"],
}


@pytest.fixture(params=sorted(COMMANDS))
def command(request: pytest.FixtureRequest) -> list[str]:
    return COMMANDS[request.param]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def check(rc: int, err: str, code: str) -> None:
    assert rc == 2, err
    assert err.startswith(f"error[{code}]: cannot listen on "), err
    assert "(hint: " in err and "Traceback" not in err


def test_a_host_that_does_not_resolve_is_named(command: list[str], run_cli: RunCli) -> None:
    rc, _, err = run_cli([*command, "--host", UNRESOLVABLE, "--port", "0" if "serve" in command else "8765"], timeout=60)
    check(rc, err, "host-not-found")
    assert UNRESOLVABLE in err and "port-in-use" not in err


def test_an_address_of_another_machine_is_named(command: list[str], run_cli: RunCli) -> None:
    rc, _, err = run_cli([*command, "--host", NOT_HERE, "--port", "8765"], timeout=60)
    check(rc, err, "address-not-available")
    assert f"{NOT_HERE} is not an address of this machine" in err


def test_a_port_in_use_is_named(command: list[str], run_cli: RunCli, busy_port: int) -> None:
    rc, _, err = run_cli([*command, "--port", str(busy_port)], timeout=60)
    check(rc, err, "port-in-use")
    assert f"port {busy_port} is in use" in err


def _without_bind_privilege() -> Callable[[], None] | None:
    """A pre-exec hook that takes CAP_NET_BIND_SERVICE from the child, when this
    process runs as root (whose children could otherwise bind any port)."""
    if os.geteuid() != 0:
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def drop() -> None:
        pr_capbset_drop, cap_net_bind_service = 24, 10
        if libc.prctl(pr_capbset_drop, cap_net_bind_service, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop


def test_a_privileged_port_without_the_privilege_is_named(command: list[str], qwen_home: Path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the privileged-port rule is checked on Linux")
    start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    if start <= 80:
        pytest.skip("this machine lets anyone bind port 80")
    proc = subprocess.run([sys.executable, "-m", "qwenhome", *command, "--port", "80"],
                          env=clean_env(qwen_home), cwd=qwen_home.parent, capture_output=True, text=True,
                          timeout=60, preexec_fn=_without_bind_privilege())
    check(proc.returncode, proc.stderr, "port-permission-denied")
    assert "port-in-use" not in proc.stderr
