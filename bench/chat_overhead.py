"""The API's own cost per chat request, in milliseconds: many short streamed
chats (``max_tokens=1`` by default) through a real ``qwenhome.app.serve``
process against the same generation called directly, interleaved.

``bench/serve.py`` compares whole runs (TTFT and tokens/s); on a small model
its ratio is dominated by what the API adds per request, and on a shared
2-core machine a ratio of two 15 ms figures moves with the load. This
measures that addition many times over, and beside it what the load cannot
move: the CPU time the server's event loop spends per request (its main
thread's, from ``/proc``), and the worker's.

The client is a raw HTTP/1.1 socket kept alive (``TCP_NODELAY``), so little
of the figure is the client's own parsing; ``--httpx`` uses an
``httpx.Client`` instead, as the ``openai`` package does.

    python bench/chat_overhead.py                      # the 6-layer Qwen2 of serve.py, 60 pairs
    python bench/chat_overhead.py --requests 200 --tokens 1
    python bench/chat_overhead.py --model PATH

Prints p50/p90 of TTFT for both sides, of the per-pair difference (API minus
the direct run just before or after it), and the server's CPU ms per request.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "bench")]

from _common import result_header, write_result  # noqa: E402
from serve import MODEL_ID, PROMPT, pct, setup  # noqa: E402

from qwenhome.app.workers.process import WorkerOptions  # noqa: E402


class RawClient:
    """One kept-alive HTTP/1.1 connection; reads a chunked SSE answer."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host = f"{host}:{port}"
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def chat(self, tokens: int) -> tuple[float, float]:
        """(seconds to the first content event, seconds to the end)."""
        body = json.dumps({"model": MODEL_ID, "messages": PROMPT, "max_tokens": tokens, "temperature": 0,
                           "stream": True, "ignore_eos": True}).encode()
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        t0 = time.perf_counter()
        self.sock.sendall(head + body)
        status = self.file.readline()
        if b" 200 " not in status:
            raise SystemExit(f"the server answered {status!r}")
        chunked = False
        while (line := self.file.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                chunked = True
        assert chunked, "a streamed answer is chunked"
        first = None
        buf = b""
        while True:
            size = int(self.file.readline().split(b";")[0], 16)
            data = self.file.read(size + 2)[:-2]
            if size == 0:
                break
            buf += data
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                if first is None and b'"content": "' in event and b'"content": ""' not in event:
                    first = time.perf_counter()
        end = time.perf_counter()
        assert first is not None, "no content event"
        return first - t0, end - t0

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class HttpxClient:
    def __init__(self, url: str) -> None:
        import httpx

        self.url = url
        self.client = httpx.Client(timeout=600)

    def chat(self, tokens: int) -> tuple[float, float]:
        from serve import server_run

        ttft, total, _ = server_run(self.url, tokens, self.client)
        return ttft, total

    def close(self) -> None:
        self.client.close()


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """CPU seconds (nanosecond resolution, from schedstat) of one thread of a
    process, or of all its threads."""
    tids = [tid] if tid is not None else [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    total = 0
    for t in tids:
        try:
            total += int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0])
        except (OSError, ValueError):  # a thread that ended meanwhile
            pass
    return total / 1e9


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def ms(values: list[float], q: float) -> float:
    return round(pct(values, q) * 1e3, 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--tokens", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--httpx", action="store_true", help="stream with httpx (as the openai package) instead of a raw socket")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()

    doc = result_header("chat_overhead", sys.argv[1:])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="qwenhome-bench-overhead-") as tmp:
        _, direct, proc, url = setup(Path(tmp), args.model, args.threads, WorkerOptions().nice)
        client: Any = HttpxClient(url) if args.httpx else RawClient(url)
        try:
            workers = children(proc.pid)
            for _ in range(5):  # warm-up both sides
                direct.run(args.tokens)
                client.chat(args.tokens)
            d_runs: list[float] = []
            a_runs: list[float] = []
            a_totals: list[float] = []
            diffs: list[float] = []
            loop0, server0 = cpu_seconds(proc.pid, proc.pid), cpu_seconds(proc.pid)
            worker0 = sum(cpu_seconds(w) for w in workers)
            api_wall = 0.0
            for i in range(args.requests):  # alternating which side goes first
                if i % 2:
                    d = direct.run(args.tokens)[0]
                    t = time.perf_counter()
                    a, total = client.chat(args.tokens)
                    api_wall += time.perf_counter() - t
                else:
                    t = time.perf_counter()
                    a, total = client.chat(args.tokens)
                    api_wall += time.perf_counter() - t
                    d = direct.run(args.tokens)[0]
                d_runs.append(d)
                a_runs.append(a)
                a_totals.append(total)
                diffs.append(a - d)
            loop_cpu = cpu_seconds(proc.pid, proc.pid) - loop0
            server_cpu = cpu_seconds(proc.pid) - server0 - loop_cpu
            worker_cpu = sum(cpu_seconds(w) for w in workers) - worker0
        finally:
            client.close()
            direct.close()
            proc.terminate()
            proc.wait(60)
    n = args.requests
    print(f"{n} streamed chats of {args.tokens} token(s), {'httpx' if args.httpx else 'raw socket'} client, "
          f"{args.threads} threads, {os.cpu_count()} cores; load average {load_before[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    print(f"{'':30}{'p50 ms':>9}{'p90 ms':>9}{'mean ms':>9}")
    for name, vals in (("direct generate() TTFT", d_runs), ("API TTFT", a_runs), ("API total", a_totals),
                       ("API - direct (pairs)", diffs)):
        print(f"{name:30}{ms(vals, .5):9.2f}{ms(vals, .9):9.2f}{statistics.fmean(vals) * 1e3:9.2f}")
    print(f"server CPU per request: event loop {loop_cpu / n * 1e3:.2f} ms, its other threads "
          f"{server_cpu / n * 1e3:.2f} ms; worker {worker_cpu / n * 1e3:.2f} ms")
    doc.update({
        "model": str(args.model) if args.model else "Qwen2 6x384 (built locally)", "requests": n,
        "tokens": args.tokens, "threads": args.threads, "client": "httpx" if args.httpx else "raw",
        "direct_ttft_ms": {"p50": ms(d_runs, .5), "p90": ms(d_runs, .9)},
        "api_ttft_ms": {"p50": ms(a_runs, .5), "p90": ms(a_runs, .9)},
        "api_total_ms": {"p50": ms(a_totals, .5), "p90": ms(a_totals, .9)},
        "overhead_ms": {"p50": ms(diffs, .5), "p90": ms(diffs, .9), "mean": round(statistics.fmean(diffs) * 1e3, 2)},
        "cpu_ms_per_request": {"loop": round(loop_cpu / n * 1e3, 3), "server_other_threads": round(server_cpu / n * 1e3, 3),
                               "worker": round(worker_cpu / n * 1e3, 3)},
        "load_average": [load_before[0], os.getloadavg()[0]],
        "runs": {"direct": d_runs, "api": a_runs, "api_total": a_totals},
    })
    print(f"wrote {write_result(doc, args.json_out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
