"""Run a command where no packet leaves unseen, and none leaves at all.

``run_isolated`` starts ``unshare -rn`` (a new user and network namespace,
no root needed) with this module as the driver inside. The namespace has a
loopback, and one way out: a tun device that nobody reads, with the default
IPv4 and IPv6 routes through it. Every packet meant for another machine (a
DNS query to the resolver in /etc/resolv.conf, a TCP SYN, a UDP datagram) is
counted on that device (``tx_packets`` + ``tx_dropped``) and goes nowhere.
When strace is installed the command also runs under it
(``-e trace=connect,sendto,sendmsg,sendmmsg``), so a failure names the
calls and addresses that tried.

Inside, the driver starts the command, optionally waits for ``ready_url``
(``/health`` answering ``ready``) and fetches a few pages over 127.0.0.1,
then stops it with SIGINT as Ctrl+C does, and prints one JSON document.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEVICE = "qhout0"
ROOT = Path(__file__).resolve().parents[2]
LOCAL_ADDRESS = re.compile(r'inet_addr\("127\.|inet_pton\(AF_INET6, "(::1|::ffff:127\.[0-9.]+)"')
TRACED_CALL = re.compile(r"\b(connect|sendto|sendmsg|sendmmsg)\(")


@functools.cache
def netns_unavailable() -> str | None:
    """Why the isolation cannot run here, or None when it can."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    for tool in ("unshare", "ip"):
        if _which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(["unshare", "-rn", _which("ip") or "ip", "tuntap", "add", "dev", DEVICE, "mode", "tun"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"cannot make a network namespace with a tun device: {probe.stderr.strip()}"
    return None


def _which(tool: str) -> str | None:
    return shutil.which(tool) or next((p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}") if os.path.exists(p)),
                                      None)


@dataclass
class Isolated:
    returncode: int
    packets: int  # packets that tried to leave the machine
    remote_calls: list[str]  # traced calls to an address other than 127.0.0.1/::1 (AF_INET/AF_INET6)
    traced: bool  # strace ran
    ready: bool
    output: str
    fetched: dict[str, tuple[int, str]] = field(default_factory=dict)

    def leaks(self) -> str:
        """What left (or tried to), for an assertion message; empty when nothing did."""
        if not self.packets and not self.remote_calls:
            return ""
        calls = "\n".join(self.remote_calls[:20])
        return f"{self.packets} packet(s) tried to leave; calls:\n{calls}\n--- output ---\n{self.output[-3000:]}"


def run_isolated(argv: Sequence[str], env: Mapping[str, str], *, cwd: Path, ready_url: str | None = None,
                 fetch: Sequence[str] = (), timeout: float = 240.0) -> Isolated:
    """Run ``argv`` in a fresh network namespace (see the module's doc)."""
    spec = {"argv": list(argv), "env": dict(env), "cwd": str(cwd), "ready_url": ready_url,
            "fetch": list(fetch), "timeout": timeout}
    proc = subprocess.run(
        ["unshare", "-rn", sys.executable, "-m", "tests.support.netns", json.dumps(spec)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout + 120, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the namespace driver failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    doc = json.loads(proc.stdout)
    return Isolated(doc["returncode"], doc["packets"], doc["remote_calls"], doc["traced"], doc["ready"],
                    doc["output"], {k: (v[0], v[1]) for k, v in doc["fetched"].items()})


# -- inside the namespace ----------------------------------------------------------
def _ip(*args: str) -> None:
    subprocess.run([_which("ip") or "ip", *args], check=True, capture_output=True)


def _set_up_network() -> None:
    _ip("link", "set", "lo", "up")
    _ip("tuntap", "add", "dev", DEVICE, "mode", "tun")
    _ip("link", "set", DEVICE, "up")
    _ip("addr", "add", "10.213.0.1/24", "dev", DEVICE)
    _ip("-6", "addr", "add", "fd00:213::1/64", "dev", DEVICE)
    _ip("route", "add", "default", "dev", DEVICE)
    _ip("-6", "route", "add", "default", "dev", DEVICE)


def _packets_out() -> int:
    out = subprocess.run([_which("ip") or "ip", "-j", "-s", "link", "show", "dev", DEVICE],
                         check=True, capture_output=True, text=True).stdout
    tx = json.loads(out)[0]["stats64"]["tx"]
    return int(tx["packets"]) + int(tx["dropped"])


def _remote_calls(trace: Path) -> list[str]:
    out = []
    for line in trace.read_text(errors="replace").splitlines():
        if not TRACED_CALL.search(line):
            continue
        if "sa_family=AF_INET" not in line:  # AF_UNIX, AF_NETLINK, or a connected socket (its connect is traced)
            continue
        if LOCAL_ADDRESS.search(line):
            continue
        out.append(line.strip())
    return out


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def _wait_ready(url: str, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            status, body = _get(url)
            if status == 200 and json.loads(body).get("status") == "ready":
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    return False


def _drive(spec: dict[str, Any]) -> dict[str, Any]:
    _set_up_network()
    before = _packets_out()
    work = Path(tempfile.mkdtemp(prefix="qwenhome-netns-"))
    trace, log = work / "trace", work / "output"
    strace = _which("strace")
    argv = spec["argv"]
    if strace:
        argv = [strace, "-f", "-qq", "--seccomp-bpf", "-s", "200", "-o", str(trace),
                "-e", "trace=connect,sendto,sendmsg,sendmmsg", *argv]
    deadline = time.monotonic() + spec["timeout"]
    with log.open("wb") as out:
        # Its own process group: SIGINT reaches the command as Ctrl+C would (strace blocks it for itself).
        proc = subprocess.Popen(argv, env=spec["env"], cwd=spec["cwd"], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        ready, fetched = False, {}
        try:
            if spec["ready_url"]:
                ready = _wait_ready(spec["ready_url"], proc, deadline)
                if ready:
                    fetched = {url: _get(url) for url in spec["fetch"]}
                    os.killpg(proc.pid, signal.SIGINT)
            code = proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
    time.sleep(0.5)  # a packet queued at the end is counted too
    return {
        "returncode": code,
        "packets": _packets_out() - before,
        "remote_calls": _remote_calls(trace) if strace and trace.exists() else [],
        "traced": bool(strace),
        "ready": ready,
        "fetched": fetched,
        "output": log.read_text(errors="replace"),
    }


if __name__ == "__main__":
    sys.stdout.write(json.dumps(_drive(json.loads(sys.argv[1]))))
