"""Stock clients against the mirror, for ``mirror.py``: huggingface_hub with hf_xet (the Xet path)
and without it (plain HTTP), N at a time, each a process of its own like N machines of a team.

    python bench/_stock.py ENDPOINT REPO FILE OUT     # one client (what the parent starts)

A client imports huggingface_hub, says ``ready``, waits for a line on stdin,
then downloads FILE of REPO into the cache OUT and prints when it started and
ended and where the file is: the parent starts all clients, waits until all are
ready (imports are not measured), and times from the first start to the last
end. Every downloaded file is checked (size and sha256) after the round.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

# name -> (the client's extra environment, which server it downloads from)
KINDS = {
    "hf_xet -> mirror (Xet)": ({}, "mirror"),
    "hf plain -> mirror": ({"HF_HUB_DISABLE_XET": "1"}, "mirror"),
    "hf plain -> nginx": ({"HF_HUB_DISABLE_XET": "1"}, "nginx"),
}


@dataclass
class StockRun:
    kind: str
    clients: int
    seconds: float = 0.0
    bytes: int = 0
    server_cpu_s: float = 0.0  # the mirror's (and nginx's, behind which the mirror answers metadata)
    client_cpu_s: float = 0.0
    starts: list[float] = field(default_factory=list)

    @property
    def mbps(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds else 0.0

    @property
    def server_cpu_per_gb(self) -> float:
        return self.server_cpu_s / (self.bytes / 1e9) if self.bytes else 0.0

    @property
    def client_cpu_per_gb(self) -> float:
        return self.client_cpu_s / (self.bytes / 1e9) if self.bytes else 0.0


def client_env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TZ")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update({"HOME": str(home), "HF_HOME": str(home / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_XET_TELEMETRY_ENABLED": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "NO_PROXY": "*",
                "PYTHONUNBUFFERED": "1", **extra})
    return env


def _cpu_of(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def stock_round(kind: str, endpoint: str, repo: str, name: str, clients: int, size: int, sha256: str,
                work: Path, run: StockRun) -> None:
    """``clients`` stock clients download the file at once; adds to ``run``; raises if one fails."""
    extra, _ = KINDS[kind]
    procs = []
    for i in range(clients):
        home = work / f"client-{i}"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        procs.append(subprocess.Popen([sys.executable, str(BENCH / "_stock.py"), endpoint, repo, name,
                                       str(home / "cache")], env=client_env(home, extra), stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{kind}: a client did not start: {proc.stderr.read() if proc.stderr else ''}")
        cpu0 = [_cpu_of(p.pid) for p in procs]
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        cpu = 0.0
        for proc, c0 in zip(procs, cpu0, strict=True):
            assert proc.stdout is not None
            line = proc.stdout.readline()
            cpu += _cpu_of(proc.pid) - c0
            _, err = proc.communicate(timeout=900)
            if proc.returncode != 0 or not line:
                raise RuntimeError(f"{kind}: a client failed: {err[-2000:]}")
            results.append(json.loads(line))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    run.seconds += max(r["end"] for r in results) - min(r["start"] for r in results)
    run.bytes += clients * size
    run.client_cpu_s += cpu
    run.starts.append(min(r["start"] for r in results))
    for r in results:  # verified outside the timed window
        got = Path(r["path"])
        h = hashlib.sha256()
        with open(got, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        if got.stat().st_size != size or h.hexdigest() != sha256:
            raise RuntimeError(f"{kind}: a client got a wrong file")
    for i in range(clients):
        shutil.rmtree(work / f"client-{i}", ignore_errors=True)


def client_main(endpoint: str, repo: str, name: str, out: str) -> int:
    import huggingface_hub as hf

    print("ready", flush=True)
    sys.stdin.readline()
    start = time.time()
    path = hf.hf_hub_download(repo, name, cache_dir=out, endpoint=endpoint, token=False)
    end = time.time()
    print(json.dumps({"start": start, "end": end, "path": path}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(client_main(*sys.argv[1:]))
