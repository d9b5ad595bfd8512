"""Throughput and time to first byte of ``qwenhome mirror serve`` against nginx
serving the same bytes as static files (issue 6), and stock clients on the
mirror's Xet path against its plain HTTP (issue 24).

    .venv/bin/python bench/mirror.py                       # 500 MB, 1/8/32 clients, 2 repeats
    .venv/bin/python bench/mirror.py --size-mb 100 --clients 8 --repeat 1
    .venv/bin/python bench/mirror.py --only-stock --clients 1 8 32   # stock clients only, 200 MiB

Both servers run as separate processes over one generated file (the mirror
with ``--repos``, nginx with ``sendfile on`` and one worker per core). The
load is curl (C, event-driven: ``curl -Z``, one process per core): N concurrent
clients each GET the whole file, in rounds, until ``--seconds`` have passed; every transfer is
checked for status 200 and the full size. Servers alternate within each
repeat so that machine noise hits both; the table shows medians over repeats:
MB/s, the ratio to nginx (goal: >= 0.8 at 8 and 32 clients), the server's and
the clients' CPU seconds per GB sent (server and clients share the cores, so
these are the figures that carry to a bigger machine), and the p50/p99 time to
first byte over all transfers.

The second table is stock ``huggingface_hub`` (``hf_hub_download`` of a file
of ``--stock-size-mb``), N client processes at once, each with its own cache
(``bench/_stock.py``): with hf_xet, through the mirror's CAS and xorbs; without
it (``HF_HUB_DISABLE_XET=1``), over the mirror's plain HTTP, and over nginx
serving the bodies statically (nginx passes the metadata requests, HEAD and
API, to the mirror). ``--stock-shape MBPS`` puts ``bench/_shaper.py`` in
front of both servers: that rate per TCP connection and ``--stock-latency-ms``
per request (a link that limits each connection, where one stream per file
is slow). Imports are not timed; every file is checked (size,
sha256) after its round. The mirror runs as ``mirror serve`` does by default
(Xet on: its file is chunked before measuring). Goal (issue 24): hf_xet at
least 2x plain huggingface_hub from the mirror with 8 clients. Writes
``bench/results/mirror-<time>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
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
from _stock import KINDS, StockRun, stock_round

REPO = "Bench/Model"
FILE = "model.safetensors"
STOCK_FILE = "stock.safetensors"


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


def start_mirror(repos: Path, home: Path, names: tuple[str, ...]) -> tuple[subprocess.Popen[bytes], int]:
    """``mirror serve --repos`` as users run it (Xet on); returns once its files are chunked."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(QWEN_HOME=str(home), PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "qwenhome", "mirror", "serve", "--port", str(port), "--repos", str(repos)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    deadline = time.monotonic() + 600
    while True:
        chunked = 0
        for name in names:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("HEAD", f"/{REPO}/resolve/main/{name}")
            chunked += conn.getresponse().getheader("X-Xet-Hash") is not None
            conn.close()
        if chunked == len(names):
            return proc, port
        if time.monotonic() > deadline:
            raise RuntimeError("the mirror did not chunk its file in 10 minutes")
        time.sleep(0.5)


NGINX_CONF = """
{main}
http {{
{http}
    upstream meta {{ server 127.0.0.1:{meta_port}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location ~ ^/([^/]+)/([^/]+)/resolve/[^/]+/(.*)$ {{
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            # HEAD (metadata) goes to the mirror as it came; "break" keeps the rewrite below from it.
            if ($request_method = HEAD) {{ proxy_pass http://meta; break; }}
            rewrite ^/([^/]+)/([^/]+)/resolve/[^/]+/(.*)$ /$1/$2/$3 break;
        }}
        location / {{
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_pass http://meta;
        }}
    }}
}}
"""


def start_nginx(repos: Path, tmp: Path, workers: int, meta_port: int) -> tuple[subprocess.Popen[bytes], int] | None:
    """nginx serving the files' bodies itself; metadata (API, HEAD) from the mirror at ``meta_port``."""
    exe = find_nginx()
    if exe is None:
        return None
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(main=main_settings(tmp, workers, 1024), port=port, root=repos,
                                      http=http_settings(tmp), meta_port=meta_port))
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


def make_stock_file(root: Path, size_mb: int) -> tuple[int, str]:
    """Random bytes without repeats, like weights (Xet would deduplicate repeated blocks)."""
    rng = random.Random(1)
    sha = hashlib.sha256()
    with open(root / REPO / STOCK_FILE, "wb") as fh:
        for _ in range(size_mb):
            block = rng.randbytes(1024 * 1024)
            fh.write(block)
            sha.update(block)
    return size_mb * 1024 * 1024, sha.hexdigest()


def curl_table(args: argparse.Namespace, servers: dict[str, tuple[subprocess.Popen[bytes], int]],
               runs: list[Run]) -> list[dict[str, object]]:
    print(f"{args.size_mb} MiB file, curl -Z clients, {args.repeat} repeat(s), load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'server':<17}{'clients':>8}{'MB/s':>7}{'vs nginx':>9}{'srv CPU s/GB':>13}{'curl CPU s/GB':>14}"
          f"{'ttfb p50':>9}{'ttfb p99':>9}  runs (MB/s)")
    table: list[dict[str, object]] = []
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
    return table


def stock_table(args: argparse.Namespace, runs: list[StockRun]) -> list[dict[str, object]]:
    shaped = (f", {args.stock_shape:g} MB/s per connection and {args.stock_latency_ms:g} ms per request"
              if args.stock_shape else "")
    print(f"\n{args.stock_size_mb} MiB file, stock huggingface_hub {hf_version()} clients (one process each){shaped}, "
          f"{args.repeat} repeat(s), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'client -> server':<24}{'clients':>8}{'MB/s':>7}{'vs plain':>9}{'mirror CPU s/GB':>16}"
          f"{'client CPU s/GB':>16}  runs (MB/s)")
    table: list[dict[str, object]] = []
    kinds = list(dict.fromkeys(r.kind for r in runs))
    for clients in args.clients:
        medians = {k: statistics.median(r.mbps for r in runs if r.kind == k and r.clients == clients) for k in kinds}
        for kind in kinds:
            mine = [r for r in runs if r.kind == kind and r.clients == clients]
            ref = medians.get("hf plain -> mirror")
            ratio = medians[kind] / ref if ref else None
            srv = statistics.median(r.server_cpu_per_gb for r in mine)
            cli = statistics.median(r.client_cpu_per_gb for r in mine)
            table.append({"client": kind, "clients": clients, "mbps": round(medians[kind], 1),
                          "vs_plain": None if ratio is None else round(ratio, 3),
                          "server_cpu_s_per_gb": round(srv, 2), "client_cpu_s_per_gb": round(cli, 2)})
            print(f"{kind:<24}{clients:>8}{medians[kind]:>7.0f}{(f'{ratio:.2f}' if ratio else '-'):>9}"
                  f"{srv:>16.2f}{cli:>16.2f}  " + " ".join(f"{r.mbps:.0f}" for r in mine))
    return table


def hf_version() -> str:
    out = subprocess.run([sys.executable, "-c", "import huggingface_hub, hf_xet; "
                          "print(huggingface_hub.__version__, hf_xet.__version__ if hasattr(hf_xet, '__version__') "
                          "else '')"], capture_output=True, text=True, check=False)
    return out.stdout.strip().replace(" ", " + hf_xet ") or "?"


def measure_stock(servers: dict[str, tuple[subprocess.Popen[bytes], int]], endpoints: dict[str, str], kind: str,
                  clients: int, size: int, sha: str, work: Path) -> StockRun:
    run = StockRun(kind, clients)
    target = KINDS[kind][1]
    pids = [servers["qwenhome mirror"][0].pid] + ([servers["nginx"][0].pid] if target == "nginx" else [])
    cpu0 = sum(process_cpu(pid) for pid in pids)
    stock_round(kind, endpoints[target], REPO, STOCK_FILE, clients, size, sha, work, run)
    run.server_cpu_s = sum(process_cpu(pid) for pid in pids) - cpu0
    return run


def start_shaper(port: int, mbps: float, latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    """bench/_shaper.py in front of ``port``: ``mbps`` per TCP connection, ``latency_ms`` before each request."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent / "_shaper.py"),
                             "--upstream", f"http://127.0.0.1:{port}", "--bandwidth", str(mbps * 1e6),
                             "--latency", str(latency_ms / 1000)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    return proc, str(json.loads(proc.stdout.readline())["url"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=500, help="size of the one file (MiB)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--seconds", type=float, default=4.0, help="minimum load time per measurement")
    ap.add_argument("--repeat", type=int, default=2, help="measurements per server and client count")
    ap.add_argument("--nginx-workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--stock-size-mb", type=int, default=200, help="size of the stock clients' file (MiB)")
    ap.add_argument("--stock-shape", type=float, default=None, metavar="MBPS",
                    help="stock clients reach the servers through bench/_shaper.py: MB/s per TCP connection")
    ap.add_argument("--stock-latency-ms", type=float, default=20.0, help="with --stock-shape: latency per request")
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--only-stock", action="store_true", help="only the stock clients' table")
    only.add_argument("--skip-stock", action="store_true", help="only the curl table")
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
        size = make_file(repos, args.size_mb if not args.only_stock else 1)
        stock_size, stock_sha = make_stock_file(repos, args.stock_size_mb) if not args.skip_stock else (0, "")
        servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        runs: list[Run] = []
        stock_runs: list[StockRun] = []
        shapers: list[subprocess.Popen[str]] = []
        try:
            names = (FILE,) if args.skip_stock else (FILE, STOCK_FILE)
            servers["qwenhome mirror"] = start_mirror(repos, tmp / "home", names)
            # Warm-up: the page cache fills.
            curl_round(curl, servers["qwenhome mirror"][1], 1, size, Run("warm-up", 1))
            nginx = start_nginx(repos, tmp, args.nginx_workers, servers["qwenhome mirror"][1])
            if nginx is not None:
                servers["nginx"] = nginx
            endpoints = {"mirror": f"http://127.0.0.1:{servers['qwenhome mirror'][1]}"}
            if nginx is not None:
                endpoints["nginx"] = f"http://127.0.0.1:{nginx[1]}"
            if args.stock_shape and not args.skip_stock:
                for target in list(endpoints):
                    port = servers["nginx" if target == "nginx" else "qwenhome mirror"][1]
                    shaper, endpoints[target] = start_shaper(port, args.stock_shape, args.stock_latency_ms)
                    shapers.append(shaper)
            for rep in range(args.repeat):
                for clients in args.clients:
                    order = list(servers.items())
                    if rep % 2:
                        order.reverse()
                    for name, (proc, port) in ([] if args.only_stock else order):
                        runs.append(measure(curl, name, proc.pid, port, clients, size, args.seconds))
                    kinds = [k for k in KINDS if KINDS[k][1] in servers or KINDS[k][1] == "mirror"]
                    kinds = kinds[rep % len(kinds):] + kinds[:rep % len(kinds)]  # rotated every repeat
                    for kind in ([] if args.skip_stock else kinds):
                        stock_runs.append(measure_stock(servers, endpoints, kind, clients, stock_size, stock_sha,
                                                        tmp / "work"))
        finally:
            for shaper in shapers:
                shaper.communicate("quit\n", timeout=10)
            for name, (proc, _) in servers.items():
                stop(proc, name != "nginx")

    if runs:
        doc["table"] = curl_table(args, servers, runs)
        doc["runs"] = [{**asdict(r), "ttfb_ms": [round(t, 1) for t in r.ttfb_ms]} for r in runs]
    if stock_runs:
        doc["stock_table"] = stock_table(args, stock_runs)
        doc["stock_runs"] = [asdict(r) for r in stock_runs]
    if "nginx" not in servers:
        print("nginx not installed: no peer measured (apt-get install nginx-light)")
    print(f"\nwrote {write_result(doc, args.json)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
