"""Throughput and time to first byte of ``qwenhome mirror serve`` against nginx
serving the same bytes as static files (issue 6).

    .venv/bin/python bench/mirror.py                       # 500 MB, 1/8/32 clients, 2 repeats
    .venv/bin/python bench/mirror.py --size-mb 100 --clients 8 --repeat 1

Both servers run as separate processes over one generated file (the mirror
with ``--repos``, nginx with ``sendfile on`` and one worker per core). The
load is curl (C, event-driven: ``curl -Z``, one process per core): N concurrent
clients each GET the whole file, in rounds, until ``--seconds`` have passed; every transfer is
checked for status 200 and the full size. Servers alternate within each
repeat so that machine noise hits both; the table shows medians over repeats:
MB/s, the ratio to nginx (goal: >= 0.8 at 8 and 32 clients), the server's and
the clients' CPU seconds per GB sent (server and clients share the cores, so
these are the figures that carry to a bigger machine), and the p50/p99 time to
first byte over all transfers. Writes ``bench/results/mirror-<time>.json``.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import result_header, write_result
from _nginx import find_nginx, http_settings, main_settings

REPO = "Bench/Model"
FILE = "model.safetensors"


def make_file(root: Path, size_mb: int) -> int:
    folder = root / REPO
    folder.mkdir(parents=True, exist_ok=True)
    block = random.Random(0).randbytes(1024 * 1024)
    with open(folder / FILE, "wb") as fh:
        for i in range(size_mb):
            fh.write(i.to_bytes(8, "big") + block[8:])
    return size_mb * 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start")


def start_mirror(repos: Path, home: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(QWEN_HOME=str(home), PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "qwenhome", "mirror", "serve", "--port", str(port), "--repos", str(repos)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc, port


NGINX_CONF = """
{main}
http {{
{http}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
            rewrite ^/([^/]+)/([^/]+)/resolve/[^/]+/(.*)$ /$1/$2/$3 break;
        }}
    }}
}}
"""


def start_nginx(repos: Path, tmp: Path, workers: int) -> tuple[subprocess.Popen[bytes], int] | None:
    exe = find_nginx()
    if exe is None:
        return None
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(main=main_settings(tmp, workers, 1024), port=port, root=repos,
                                      http=http_settings(tmp)))
    proc = subprocess.Popen([exe, "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


@dataclass
class Run:
    server: str
    clients: int
    seconds: float = 0.0
    bytes: int = 0
    transfers: int = 0
    ttfb_ms: list[float] = field(default_factory=list)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0  # the curl processes

    @property
    def mbps(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds else 0.0

    @property
    def server_cpu_per_gb(self) -> float:
        return self.server_cpu_s / (self.bytes / 1e9) if self.bytes else 0.0

    @property
    def client_cpu_per_gb(self) -> float:
        return self.client_cpu_s / (self.bytes / 1e9) if self.bytes else 0.0


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its child processes (nginx's workers), from /proc."""
    total = 0.0
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
            pids += [int(p) for p in fh.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
    return total


def curl_round(curl: str, port: int, clients: int, size: int, run: Run) -> None:
    """One round: ``clients`` concurrent GETs of the whole file, each checked.
    The transfers are spread over one curl process per core, so that the client
    side is not one thread receiving everything."""
    url = f"http://127.0.0.1:{port}/{REPO}/resolve/main/{FILE}"
    nproc = min(clients, os.cpu_count() or 1)
    shares = [clients // nproc + (1 if i < clients % nproc else 0) for i in range(nproc)]
    procs = []
    cpu0 = _children_cpu()
    t0 = time.monotonic()
    for n in shares:
        args = [curl, "-s", "-Z", "--parallel-immediate", "--parallel-max", str(n),
                "-w", "%{http_code} %{size_download} %{time_starttransfer}\\n"]
        for _ in range(n):
            args += ["-o", "/dev/null", url]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    out = "".join(proc.communicate(timeout=600)[0] for proc in procs)
    run.seconds += time.monotonic() - t0
    run.client_cpu_s += _children_cpu() - cpu0
    lines = out.split()
    rows = [lines[i:i + 3] for i in range(0, len(lines), 3)]
    if len(rows) != clients or any(r[0] != "200" or int(r[1]) != size for r in rows):
        raise RuntimeError(f"{run.server}: failed transfers: {rows}")
    run.bytes += clients * size
    run.transfers += clients
    run.ttfb_ms += [float(r[2]) * 1000 for r in rows]


def measure(curl: str, server: str, pid: int, port: int, clients: int, size: int, seconds: float) -> Run:
    run = Run(server, clients)
    cpu0 = process_cpu(pid)
    while run.seconds < seconds or run.transfers < 2 * clients:
        curl_round(curl, port, clients, size, run)
    run.server_cpu_s = process_cpu(pid) - cpu0
    return run


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def stop(proc: subprocess.Popen[bytes], mirror: bool) -> None:
    proc.send_signal(signal.SIGINT if mirror else signal.SIGQUIT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=500, help="size of the one file (MiB)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--seconds", type=float, default=4.0, help="minimum load time per measurement")
    ap.add_argument("--repeat", type=int, default=2, help="measurements per server and client count")
    ap.add_argument("--nginx-workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--json", type=Path, default=None,
                    help="write the result here instead of bench/results/mirror-<time>.json")
    argv = sys.argv[1:]
    args = ap.parse_args(argv)
    doc = result_header("mirror", argv)
    curl = shutil.which("curl")
    if curl is None:
        print("curl is not installed: it is the load generator (apt-get install curl)")
        return 2

    with tempfile.TemporaryDirectory(prefix="qwenhome-bench-") as tmp_s:
        tmp = Path(tmp_s)
        os.chmod(tmp, 0o755)
        repos = tmp / "repos"
        size = make_file(repos, args.size_mb)
        servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        runs: list[Run] = []
        try:
            servers["qwenhome mirror"] = start_mirror(repos, tmp / "home")
            # Warm-up: the first request hashes the file (kept afterwards); the page cache fills.
            curl_round(curl, servers["qwenhome mirror"][1], 1, size, Run("warm-up", 1))
            nginx = start_nginx(repos, tmp, args.nginx_workers)
            if nginx is not None:
                servers["nginx"] = nginx
            for rep in range(args.repeat):
                for clients in args.clients:
                    order = list(servers.items())
                    if rep % 2:
                        order.reverse()
                    for name, (proc, port) in order:
                        runs.append(measure(curl, name, proc.pid, port, clients, size, args.seconds))
        finally:
            for name, (proc, _) in servers.items():
                stop(proc, name != "nginx")

    print(f"{args.size_mb} MiB file, curl -Z clients, {args.repeat} repeat(s), load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'server':<17}{'clients':>8}{'MB/s':>7}{'vs nginx':>9}{'srv CPU s/GB':>13}{'curl CPU s/GB':>14}"
          f"{'ttfb p50':>9}{'ttfb p99':>9}  runs (MB/s)")
    table = []
    for clients in args.clients:
        medians = {}
        for name in servers:
            mine = [r for r in runs if r.server == name and r.clients == clients]
            medians[name] = statistics.median(r.mbps for r in mine)
        for name in servers:
            mine = [r for r in runs if r.server == name and r.clients == clients]
            ttfb = [t for r in mine for t in r.ttfb_ms]
            ref = medians.get("nginx")
            ratio = medians[name] / ref if ref else None
            srv = statistics.median(r.server_cpu_per_gb for r in mine)
            cli = statistics.median(r.client_cpu_per_gb for r in mine)
            table.append({"server": name, "clients": clients, "mbps": round(medians[name], 1),
                          "ratio": None if ratio is None else round(ratio, 3),
                          "server_cpu_s_per_gb": round(srv, 2), "client_cpu_s_per_gb": round(cli, 2),
                          "ttfb_p50_ms": round(p(ttfb, 0.5), 1), "ttfb_p99_ms": round(p(ttfb, 0.99), 1)})
            print(f"{name:<17}{clients:>8}{medians[name]:>7.0f}{(f'{ratio:.2f}' if ratio else '-'):>9}"
                  f"{srv:>13.2f}{cli:>14.2f}{p(ttfb, 0.5):>9.1f}{p(ttfb, 0.99):>9.1f}  "
                  + " ".join(f"{r.mbps:.0f}" for r in mine))
    if "nginx" not in servers:
        print("nginx not installed: no peer measured (apt-get install nginx-light)")
    doc["table"] = table
    doc["runs"] = [{**asdict(r), "ttfb_ms": [round(t, 1) for t in r.ttfb_ms]} for r in runs]
    print(f"\nwrote {write_result(doc, args.json)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
