"""Shared pieces of the transfer benchmark: measured child processes, hashing,
file listings and the line protocol of the server process (``_server.py``).

Nothing here knows about individual tools or scenarios; ``transfer.py`` does.
Every benchmark writes its result file through :func:`write_result`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
MB = 1_000_000  # throughput is reported in decimal MB/s, like the tools themselves
MiB = 1 << 20


@dataclass
class Measured:
    """One child process: how it ended and what it cost (its own rusage only)."""

    returncode: int | None  # None: killed at the time-out
    wall_s: float
    cpu_s: float  # user + sys of the child and of the children it waited for
    peak_rss_mb: float  # ru_maxrss of the child (the largest of its process tree)
    stdout: str
    stderr: str
    started: float = 0.0  # time.monotonic() when it was started (the system-wide clock other processes read)
    busy: float | None = None  # the share of the machine's CPU time (all cores) busy while it ran

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A child environment without the user's HF/proxy/token variables."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update({"NO_PROXY": "*", "no_proxy": "*", "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(ROOT / "src")})
    env.update(extra or {})
    return env


def _read_tail(fh: IO[bytes], limit: int = 20_000) -> str:
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(max(0, size - limit))
    return fh.read().decode("utf-8", "replace")


def run_measured(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None,
                 timeout: float | None = None, log_dir: Path | None = None) -> Measured:
    """Run ``argv`` as its own process group; wall and CPU from ``wait4``, peak RSS
    as :func:`_peak_rss_kb` explains.

    Output goes to files (never a pipe a slow reader could throttle). At the
    time-out the whole group is killed and ``returncode`` is None.
    """
    log_dir = log_dir or Path(cwd or ".")
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "stdout.log", "w+b") as out, open(log_dir / "stderr.log", "w+b") as err:
        floor_kb = _status_kb("self", "VmRSS")
        cpu0 = machine_cpu()
        t0 = time.monotonic()
        proc = subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = None if timeout is None else t0 + timeout
        status: int | None = None
        hwm_kb = 0
        while True:
            pid, wstatus, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                wall = time.monotonic() - t0
                status = os.waitstatus_to_exitcode(wstatus)
                break
            if deadline is not None and time.monotonic() >= deadline:
                wall = time.monotonic() - t0
                _kill_group(proc.pid)
                _, _, usage = os.wait4(proc.pid, 0)
                status = None
                break
            hwm_kb = max(hwm_kb, _status_kb(str(proc.pid), "VmHWM"))
            time.sleep(0.005)
        proc.returncode = -1  # reaped by wait4; keep Popen from waiting again
        peak_kb = _peak_rss_kb(usage.ru_maxrss, hwm_kb, floor_kb)
        cpu1 = machine_cpu()
        busy = None if cpu0 is None or cpu1 is None or cpu1[1] <= cpu0[1] else \
            round((cpu1[0] - cpu0[0]) / (cpu1[1] - cpu0[1]), 3)
        return Measured(status, wall, usage.ru_utime + usage.ru_stime, peak_kb / 1024,
                        _read_tail(out), _read_tail(err), t0, busy)


def machine_cpu() -> tuple[int, int] | None:
    """(busy, total) clock ticks of every core so far, from /proc/stat (None
    elsewhere): whether the machine's CPU, not the link, bounded a run."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # (guest time is counted inside user time already)
    return total - idle, total


def _peak_rss_kb(ru_maxrss_kb: int, polled_hwm_kb: int, floor_kb: int) -> int:
    """The child's peak RSS.

    Linux counts the forking parent's resident set into the child's
    ``ru_maxrss`` (the memory it had before ``exec``), so for a tool smaller
    than this harness ``ru_maxrss`` is the harness. Above that floor it is
    exact; below it, the ``VmHWM`` of the exec'd program, polled every 5 ms
    while it ran, is the better figure.
    """
    if ru_maxrss_kb > floor_kb * 1.1 or not polled_hwm_kb:
        return ru_maxrss_kb
    return max(polled_hwm_kb, 1)


def _status_kb(pid: str, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(8 * MiB)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def verify_files(folder: Path, expected: Mapping[str, tuple[int, str]]) -> list[str]:
    """Problems found comparing ``folder/<path>`` with expected (size, sha256); [] is good."""
    problems = []
    for rel, (size, sha) in expected.items():
        path = folder / rel
        try:
            actual_size = path.stat().st_size
        except OSError:
            problems.append(f"{rel}: missing")
            continue
        if actual_size != size:
            problems.append(f"{rel}: size {actual_size} != {size}")
        elif sha256_file(path) != sha:
            problems.append(f"{rel}: sha256 mismatch")
    return problems


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def _shaping(bandwidth: float | None, latency: float | None) -> list[str]:
    return [*(["--bandwidth", str(bandwidth)] if bandwidth else []), *(["--latency", str(latency)] if latency else [])]


class ServerProcess:
    """The benchmark's Hub-protocol server (``bench/_server.py``), or the
    shaping proxy in front of another server (``bench/_shaper.py``,
    :meth:`shaper`), in its own process.

    Line protocol on its stdin/stdout: ``mark`` starts a measuring window,
    ``stats`` answers one JSON line about requests since the last mark,
    ``quit`` stops it. The first stdout line is ``{"url": ...}``.
    """

    def __init__(self, root: Path, *, bandwidth: float | None, latency: float | None,
                 hashes: Path | None = None, redirect_lfs: bool = False,
                 argv: list[str] | None = None) -> None:
        if argv is None:
            argv = [sys.executable, str(BENCH / "_server.py"), "--root", str(root), *_shaping(bandwidth, latency)]
            if hashes is not None:
                argv += ["--hashes", str(hashes)]
            if redirect_lfs:
                argv.append("--redirect-lfs")
        self.proc = subprocess.Popen(argv, env=clean_env(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        first = self._readline(timeout=60)
        self.url: str = first["url"]

    @classmethod
    def shaper(cls, upstream: str, *, bandwidth: float | None, latency: float | None,
               link: float | None = None, connect_latency: float | None = None) -> ServerProcess:
        """The shaping proxy in front of ``upstream``; its stats count connections and bytes."""
        argv = [sys.executable, str(BENCH / "_shaper.py"), "--upstream", upstream, *_shaping(bandwidth, latency),
                *(["--link", str(link)] if link else []),
                *(["--connect-latency", str(connect_latency)] if connect_latency else [])]
        return cls(Path(), bandwidth=bandwidth, latency=latency, argv=argv)

    def _readline(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        import select

        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError("benchmark server did not answer")
        doc: dict[str, Any] = json.loads(line)
        return doc

    def _ask(self, command: str, timeout: float = 30) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._readline(timeout)

    def mark(self) -> None:
        self._ask("mark")

    def stats(self) -> dict[str, Any]:
        return self._ask("stats")

    def stop(self) -> None:
        try:
            self._ask("quit", timeout=10)
        except (RuntimeError, OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fetch_listing(endpoint: str, repo_id: str, timeout: float = 30) -> list[tuple[str, int]]:
    """(path, size) of every file of ``repo_id`` at main, from the Hub API."""
    import urllib.request

    url = f"{endpoint.rstrip('/')}/api/models/{repo_id}/revision/main?blobs=true"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        info = json.loads(resp.read())
    return [(s["rfilename"], int(s.get("size") or 0)) for s in info.get("siblings", [])]


# -- result files ------------------------------------------------------------------------
RESULTS = BENCH / "results"


def source_state() -> dict[str, Any]:
    """The commit measured and the files under src/ and bench/ that differ from it."""
    def git(*argv: str) -> str:
        run = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True)
        return run.stdout if run.returncode == 0 else ""

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "src", "bench").splitlines()
             if not line[3:].startswith("bench/results/")]
    return {"commit": git("rev-parse", "HEAD").strip(), "uncommitted": dirty}


def machine() -> dict[str, Any]:
    """What the figures were measured on: they move with the CPU and its load."""
    model = ""
    mem_kb = 0
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
        mem_kb = _meminfo_kb("MemTotal")
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "mem_gb": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version()}


def _meminfo_kb(field: str) -> int:
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def result_header(kind: str, argv: Sequence[str]) -> dict[str, Any]:
    """The first fields of every result file: what ran, where, on what, from which commit,
    and the machine's load when it started (``finish`` adds the load at the end)."""
    started = time.strftime("%Y%m%d-%H%M%S")
    return {"kind": kind, "started": started, "command": " ".join(["python", f"bench/{kind}.py", *argv]),
            "argv": list(argv), "machine": machine(), "source": source_state(), "loadavg_before": loadavg()}


def write_result(doc: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``doc`` (begun by :func:`result_header`) to ``out`` or
    ``bench/results/<kind>-<started>.json``, the load at the end added."""
    doc["loadavg_after"] = loadavg()
    path = out or RESULTS / f"{doc['kind']}-{doc['started']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def cpu_s_per_gb(cpu_s: float | None, nbytes: int) -> float | None:
    """CPU seconds per GB moved: the figure that carries to a machine with more cores."""
    return None if cpu_s is None or not nbytes else round(cpu_s / (nbytes / 1e9), 2)
