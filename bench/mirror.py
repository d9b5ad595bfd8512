"""Throughput of ``qwenhome mirror serve`` against nginx serving the same bytes.

    .venv/bin/python bench/mirror.py                    # 1 GB, 8 and 32 clients, 10 s each
    .venv/bin/python bench/mirror.py --size-mb 200 --clients 8 --seconds 3

Both servers run as separate processes over one folder of generated files;
the same client (processes x threads, HTTP/1.1 keep-alive, 8 MiB ranged GETs
read into a reused buffer and discarded) loads each in turn. Prints a table
with MB/s and the ratio to nginx (issue 6 goal: >= 0.8 at 8 and 32 clients).
nginx is skipped with a note when it is not installed.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = "Bench/Model"
RANGE = 8 * 1024 * 1024


def make_files(root: Path, size_mb: int, nfiles: int) -> list[tuple[str, int]]:
    folder = root / REPO
    folder.mkdir(parents=True, exist_ok=True)
    block = random.Random(0).randbytes(1024 * 1024)
    per = size_mb // nfiles
    files = []
    for i in range(nfiles):
        name = f"model-{i:05d}.safetensors"
        with open(folder / name, "wb") as fh:
            for _ in range(per):
                fh.write(block)
        files.append((name, per * 1024 * 1024))
    return files


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
{user}
worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 60;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
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
    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if exe is None:
        return None
    port = free_port()
    conf = tmp / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(user=user, workers=workers, tmp=tmp, port=port, root=repos))
    proc = subprocess.Popen([exe, "-c", str(conf), "-p", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


def client_process(port: int, files: list[tuple[str, int]], threads: int, seconds: float,
                   seed: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """Threads fetch random 8 MiB ranges over keep-alive connections until time is up."""
    deadline = time.monotonic() + seconds
    totals = [0] * threads

    def worker(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        buf = bytearray(1024 * 1024)
        view = memoryview(buf)
        while time.monotonic() < deadline:
            name, size = rng.choice(files)
            start = rng.randrange(0, max(1, size - RANGE)) // 4096 * 4096
            end = min(size, start + RANGE) - 1
            conn.request("GET", f"/{REPO}/resolve/main/{name}", headers={"Range": f"bytes={start}-{end}"})
            resp = conn.getresponse()
            if resp.status != 206:
                raise RuntimeError(f"unexpected status {resp.status}")
            while n := resp.readinto(view):
                totals[i] += n
        conn.close()

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put(sum(totals))


def load(port: int, files: list[tuple[str, int]], clients: int, seconds: float) -> float:
    """MB/s moved by ``clients`` concurrent connections for ``seconds``."""
    procs_n = min(clients, max(1, (os.cpu_count() or 2)))
    per = [clients // procs_n + (1 if i < clients % procs_n else 0) for i in range(procs_n)]
    out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    procs = [mp.Process(target=client_process, args=(port, files, n, seconds, i, out))
             for i, n in enumerate(per) if n]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    total = sum(out.get() for _ in procs)
    for p in procs:
        p.join()
    return total / (time.monotonic() - t0) / 1e6


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT if "qwenhome" in " ".join(map(str, proc.args)) else signal.SIGQUIT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024, help="total bytes in the repository (MB)")
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--nginx-workers", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="qwenhome-bench-") as tmp_s:
        tmp = Path(tmp_s)
        os.chmod(tmp, 0o755)
        repos = tmp / "repos"
        files = make_files(repos, args.size_mb, args.files)
        servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        mirror = start_mirror(repos, tmp / "home")
        servers["qwenhome mirror"] = mirror
        # Warm up: the first request hashes the files (cached afterwards), and the page cache fills.
        load(mirror[1], files, 2, 1.0)
        nginx = start_nginx(repos, tmp, args.nginx_workers)
        if nginx is not None:
            servers["nginx"] = nginx
        try:
            results: dict[tuple[str, int], float] = {}
            for clients in args.clients:
                for name, (_, port) in servers.items():
                    results[(name, clients)] = load(port, files, clients, args.seconds)
        finally:
            for proc, _ in servers.values():
                stop(proc)

    print(f"{'server':<18}{'clients':>8}{'MB/s':>10}{'vs nginx':>10}")
    for (name, clients), mbps in results.items():
        ref = results.get(("nginx", clients))
        ratio = f"{mbps / ref:.2f}" if ref else "-"
        print(f"{name:<18}{clients:>8}{mbps:>10.0f}{ratio:>10}")
    if nginx is None:
        print("nginx not installed: no peer measured (apt-get install nginx-light)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
