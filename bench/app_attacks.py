"""What hostile requests cost the complete system's API: its memory, and its
answers to ``GET /health`` while they arrive.

    python bench/app_attacks.py                 # every attack once
    python bench/app_attacks.py --repeat 3      # the worst of three runs per attack

One real server process (``python -m qwenhome.app.serve``: a small Qwen2 built
locally for chat, the demo's tiny Qwen-Image pipeline for images, both in a
temporary home) and, per attack, a /health probe on its own connection every
10 ms. Before each attack the server's peak resident memory is reset
(``/proc/PID/clear_refs``), so "growth" is its peak during the attack minus
its resident memory before. The attacks, from issue 19:

- a 200 MB chat body, its size declared (Content-Length), and the same sent
  chunked (no size to refuse it by: counted as it arrives);
- a 500 MB image upload, declared and chunked;
- four 8192x8192 PNG bombs at once (about 200 KB each, 200 MB each decoded).

Goals: growth under 100 MB and /health under 100 ms throughout. Prints a
table; exits 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import result_header, write_result

MiB = 1 << 20
MB = 1_000_000
MODEL_ID = "bench/qwen2-small"
GROWTH_GOAL_MB = 100
HEALTH_GOAL_MS = 100
BOUNDARY = "bench-boundary"


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def png_bomb(side: int = 8192) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\0" * (1 + side * 3)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def build_home(work: Path) -> tuple[Path, Path]:
    """A home holding the tiny image model (pulled from a local mirror), and a chat model folder."""
    from qwenhome.config import load_settings
    from qwenhome.demo.tinymodel import TinySpec, build_tiny_qwen2
    from qwenhome.images.demo import ensure_demo_image_model

    home = work / "home"
    ensure_demo_image_model(load_settings({}, home=str(home)))
    spec = TinySpec(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=1, max_position_embeddings=512, train_steps=0)
    return home, build_tiny_qwen2(work / "chat", spec=spec)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(home: Path, snapshot: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "qwenhome.app.serve", "--home", str(home), "--model",
                                 MODEL_ID, "--snapshot", str(snapshot), "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()[-3000:]}")
        try:
            if (httpx.get(f"{url}/health", timeout=2).json().get("status") == "ready"
                    and httpx.get(f"{url}/api/images/status", timeout=2).json().get("state") == "ready"):
                return proc, url
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become ready")


class Probe:
    """GET /health every 10 ms on one connection; the latency of each answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ms: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as c:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    ok = c.get(f"{self.url}/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.ms.append((time.perf_counter() - t0) * 1000)
                self.failures += not ok
                time.sleep(0.01)

    def __enter__(self) -> Probe:
        self._thread.start()
        while not self.ms:
            time.sleep(0.005)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.2)  # and a moment after: a stall may follow the answer
        self._stop.set()
        self._thread.join(30)


def _blocks(total: int, block: bytes = b"a" * MiB) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        piece = block[: min(len(block), total - sent)]
        sent += len(piece)
        yield piece


def chat_body(size: int, chunked: bool) -> tuple[Iterator[bytes] | bytes, dict[str, str]]:
    head = b'{"model": "' + MODEL_ID.encode() + b'", "messages": [{"role": "user", "content": "'
    tail = b'"}], "max_tokens": 4}'
    parts = [head, *_blocks(size - len(head) - len(tail)), tail]
    headers = {"Content-Type": "application/json"}
    if not chunked:
        headers["Content-Length"] = str(size)
    return iter(parts), headers


def upload_body(size: int, chunked: bool) -> tuple[Iterator[bytes] | bytes, dict[str, str]]:
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    parts = [head, *_blocks(size - len(head) - len(tail), b"\0" * MiB), tail]
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    if not chunked:
        headers["Content-Length"] = str(size)
    return iter(parts), headers


@dataclass
class Outcome:
    name: str
    answers: str
    seconds: float
    growth_mb: float
    health_max_ms: float
    health_p50_ms: float
    health_failures: int

    @property
    def ok(self) -> bool:
        return (self.growth_mb < GROWTH_GOAL_MB and self.health_max_ms < HEALTH_GOAL_MS
                and self.health_failures == 0)


def run_attack(name: str, pid: int, url: str, attack: Callable[[], list[str]]) -> Outcome:
    before_kb = status_kb(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak (VmHWM) starts again from now
    with Probe(url) as probe:
        t0 = time.perf_counter()
        answers = attack()
        seconds = time.perf_counter() - t0
    peak_kb = max(status_kb(pid, "VmHWM"), status_kb(pid, "VmRSS"))
    return Outcome(name, ", ".join(sorted(set(answers))), seconds, (peak_kb - before_kb) * 1024 / MB,
                   max(probe.ms), statistics.median(probe.ms), probe.failures)


def post(url: str, path: str, body: Iterator[bytes] | bytes, headers: dict[str, str]) -> str:
    try:
        r = httpx.post(url + path, content=body, headers=headers, timeout=120)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}"
    code = r.json().get("error", {}).get("code", "") if r.status_code >= 400 else ""
    return f"{r.status_code} {code}".strip()


def attacks(url: str) -> dict[str, Callable[[], list[str]]]:
    bomb = png_bomb()

    def bombs() -> list[str]:
        out: list[str] = []

        def one() -> None:
            files = {"image": ("bomb.png", bomb, "image/png")}
            r = httpx.post(url + "/v1/images/edits", data={"prompt": "x"}, files=files, timeout=120)
            out.append(f"{r.status_code} {r.json().get('error', {}).get('code', '')}".strip())

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    return {
        "chat 200 MB, declared": lambda: [post(url, "/v1/chat/completions", *chat_body(200 * MB, False))],
        "chat 200 MB, chunked": lambda: [post(url, "/v1/chat/completions", *chat_body(200 * MB, True))],
        "upload 500 MB, declared": lambda: [post(url, "/v1/images/edits", *upload_body(500 * MB, False))],
        "upload 500 MB, chunked": lambda: [post(url, "/v1/images/edits", *upload_body(500 * MB, True))],
        f"4 x 8192x8192 PNG bomb ({len(bomb) // 1000} KB)": bombs,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=1, help="runs per attack; the worst is shown")
    ap.add_argument("--out", type=Path, default=None, help="result file (default: bench/results/app_attacks-TIME.json)")
    args = ap.parse_args()
    doc = result_header("app_attacks", sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="qwenhome-bench-attacks-") as tmp:
        work = Path(tmp)
        home, snapshot = build_home(work)
        proc, url = start_server(home, snapshot, work / "server.log")
        try:
            rss0 = status_kb(proc.pid, "VmRSS") * 1024 / MB
            results: list[Outcome] = []
            for name, attack in attacks(url).items():
                runs = [run_attack(name, proc.pid, url, attack) for _ in range(args.repeat)]
                results.append(max(runs, key=lambda o: (o.growth_mb, o.health_max_ms)))
            alive = httpx.get(f"{url}/health", timeout=10).json().get("status")
            traceback = "Traceback" in (work / "server.log").read_text(errors="replace")
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"server: qwenhome.app.serve, resident {rss0:.0f} MB when ready; {args.repeat} run(s) per attack, worst shown")
    print(f"{'attack':34}{'answer':28}{'s':>7}{'growth MB':>11}{'health max ms':>15}{'p50 ms':>8}")
    for o in results:
        print(f"{o.name:34}{o.answers:28}{o.seconds:7.2f}{o.growth_mb:11.1f}{o.health_max_ms:15.1f}"
              f"{o.health_p50_ms:8.1f}" + ("" if o.ok else "   <- goal missed"))
    print(f"after: /health {alive}; traceback in the server log: {'yes' if traceback else 'no'}")
    ok = all(o.ok for o in results) and alive == "ready" and not traceback
    doc.update(resident_mb_ready=round(rss0, 1), repeat=args.repeat, health_after=alive,
               traceback_in_log=traceback, goals_met=ok,
               attacks=[{**asdict(o), "ok": o.ok} for o in results])
    print(f"result: {write_result(doc, args.out)}")
    print(f"goals (growth < {GROWTH_GOAL_MB} MB, /health < {HEALTH_GOAL_MS} ms): {'met' if ok else 'missed'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
