"""``launch`` and ``mirror serve`` name the real reason they cannot listen:
a host that does not resolve, an address not on this machine, a port that
needs privileges, a port in use. Real processes, real sockets; nothing is sent
anywhere (every failure happens at bind time)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwenhome.app.launch import run_launch
from qwenhome.config import load_settings
from qwenhome.errors import UsageError
from qwenhome.mirror.run import run_mirror
from tests.support.caps import CAP_NET_BIND_SERVICE, without_capabilities
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


def test_a_privileged_port_without_the_privilege_is_named(command: list[str], qwen_home: Path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the privileged-port rule is checked on Linux")
    start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    if start <= 80:
        pytest.skip("this machine lets anyone bind port 80")
    proc = subprocess.run([sys.executable, "-m", "qwenhome", *command, "--port", "80"],
                          env=clean_env(qwen_home), cwd=qwen_home.parent, capture_output=True, text=True,
                          timeout=60, preexec_fn=without_capabilities(CAP_NET_BIND_SERVICE))
    check(proc.returncode, proc.stderr, "port-permission-denied")
    assert "port-in-use" not in proc.stderr


def _ipv6() -> bool:
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6(), reason="this machine has no IPv6")
def test_a_refusal_with_no_named_cause_is_cannot_listen_with_the_systems_reason(
        command: list[str], run_cli: RunCli) -> None:
    """A link-local IPv6 address without its interface: bind() answers EINVAL,
    none of the causes above; the system's own words are passed on."""
    rc, _, err = run_cli([*command, "--host", "fe80::1", "--port", "0" if "serve" in command else "8765"], timeout=60)
    check(rc, err, "cannot-listen")
    assert "cannot listen on fe80::1:" in err and ": Invalid argument (hint: check --host and --port)" in err


@pytest.mark.parametrize("port", [65536, 1 << 40])
def test_a_port_out_of_range_through_the_python_api_is_invalid_port(port: int, qwen_home: Path) -> None:
    """The CLI's --port refuses such numbers itself; a program that embeds
    qwenhome passes them straight to bind()."""
    settings = load_settings({"HOME": str(qwen_home.parent)}, home=str(qwen_home))
    for start in (lambda: run_mirror(settings, port=port), lambda: run_launch(settings, port=port, demo=True)):
        with pytest.raises(UsageError) as info:
            start()
        assert (info.value.code, info.value.exit_code) == ("invalid-port", 2)
        assert info.value.message == f"cannot listen on 127.0.0.1:{port}: a port is a number from 0 to 65535"
