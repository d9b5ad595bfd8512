"""The complete system under load, against a real ``qwenhome.app.serve``
process (its chat and image engines in worker processes):

1. chat overhead: time to first token and tokens per second streamed through
   the API against calling ``generate`` directly on the same model (greedy,
   the same prompt, so both make the same tokens; the runs interleaved so
   drift hits both alike). The direct side runs in a process of its own at
   the workers' priority and torch threads, so on a shared machine both
   sides get the same share of the CPU and only the API's own cost differs.
   The API side streams over one kept-alive client, as OpenAI clients do.
   Medians decide; the best run of each side is shown beside them (the run
   the machine's other load disturbed least);
2. ``/health`` latency, p50/p99/max, while idle, while an image is generated,
   while 8 chats stream, and while both happen at once; beside it, the
   share of the time the server's event loop spent on the CPU and waiting
   for one (runnable, behind other processes), which tells a loop that is
   busy from a machine that is.

    python bench/serve.py                        # Qwen2.5-0.5B's shape (random weights) and the tiny Qwen-Image, built here
    python bench/serve.py --shape small          # a 6-layer Qwen2 instead: quicker; its 15 ms prefill makes the same ms a bigger share
    python bench/serve.py --model PATH           # any local chat model folder / snapshot
    python bench/serve.py --runs 15 --tokens 128 --seconds 20

Prints two tables; exits 1 when a goal is missed: the API's TTFT at most
``--tolerance`` (10 %) over direct and its tokens/s at most that under, and
``/health`` p99 under ``--health-p99`` (20 ms) while an image is generated
and 8 chats stream.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "bench")]

from _common import result_header, write_result  # noqa: E402

from qwenhome.app.workers.process import WorkerOptions  # noqa: E402

MODEL_ID = "bench/qwen2-small"
PROMPT = [{"role": "user", "content": "Write a long story about a model that lives in a home."}]
STREAMS = 8
IMAGE_JOB = {"prompt": "a red fox in the snow", "size": "192x192", "num_inference_steps": 50}


# Models built locally (random weights, a tokenizer trained here): the shape
# of the default chat model, Qwen2.5-0.5B (its prefill is what a user waits
# for, and what the API's few milliseconds are a share of), and a small one
# for a quick run (its whole prefill is some 15 ms: the same milliseconds
# are a bigger share).
SHAPES = {
    "qwen2.5-0.5b": ("Qwen2.5-0.5B's shape (24x896, random weights)",
                     {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                      "num_attention_heads": 14, "num_key_value_heads": 2}),
    "small": ("Qwen2 6x384 (random weights)",
              {"hidden_size": 384, "intermediate_size": 1024, "num_hidden_layers": 6,
               "num_attention_heads": 6, "num_key_value_heads": 2}),
}


def build_model(dest: Path, shape: str = "small") -> Path:
    from qwenhome.demo.tinymodel import TinySpec, build_tiny_qwen2

    spec = TinySpec(**SHAPES[shape][1], max_position_embeddings=2048, train_steps=0)
    return build_tiny_qwen2(dest, spec=spec)


def direct_run(model: Any, tokenizer: Any, tokens: int) -> tuple[float, float, int]:
    """(time to first text, total seconds, generated tokens) calling model.generate."""
    import torch

    class FirstText:
        """Time of the first visible text, as the API streams it (special tokens
        and incomplete UTF-8 produce no text yet), so both sides measure alike."""

        def __init__(self) -> None:
            self.prompt_seen = False
            self.tokens: list[int] = []
            self.first: float | None = None

        def put(self, value: Any) -> None:
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            self.tokens.extend(int(t) for t in value.reshape(-1).tolist())
            if self.first is None:
                text = tokenizer.decode(self.tokens, skip_special_tokens=True)
                if text and not text.endswith("\ufffd"):
                    self.first = time.perf_counter()

        def end(self) -> None:
            pass

    t0 = time.perf_counter()  # the chat template is the engine's work too, as in the worker
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    streamer = FirstText()
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                             streamer=streamer, pad_token_id=tokenizer.pad_token_id)
    total = time.perf_counter() - t0
    assert streamer.first is not None
    return streamer.first - t0, total, int(out.shape[-1] - ids["input_ids"].shape[-1])


def direct_child(snapshot: Path, threads: int, nice: int) -> int:
    """``--direct-child``: load the model, then one run per line read (the token count), one JSON line out."""
    os.nice(nice)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(snapshot, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(snapshot, local_files_only=True, dtype=torch.float32).eval()
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps(direct_run(model, tokenizer, int(line))), flush=True)
    return 0


class Direct:
    """The engine called directly, in its own process (see ``direct_child``)."""

    def __init__(self, snapshot: Path, threads: int, nice: int) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--direct-child", str(snapshot),
                                      "--threads", str(threads), "--nice", str(nice)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)  # a CPU group of its own, as the server's
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def run(self, tokens: int) -> tuple[float, float, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{tokens}\n")
        self.proc.stdin.flush()
        ttft, total, n = json.loads(self.proc.stdout.readline())
        return float(ttft), float(total), int(n)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(60)


def server_run(url: str, tokens: int, client: Any) -> tuple[float, float, int]:
    body = {"model": MODEL_ID, "messages": PROMPT, "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True}
    first = None
    usage = 0
    t0 = time.perf_counter()
    with client.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
            for c in chunk.get("choices", []):
                if c["delta"].get("content") and first is None:
                    first = time.perf_counter()
    total = time.perf_counter() - t0
    assert first is not None
    return first - t0, total, usage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def home_with_image_model(home: Path) -> None:
    """The tiny Qwen-Image pipeline in the home, pulled as ``--demo`` pulls it."""
    from qwenhome.config import load_settings
    from qwenhome.images.demo import ensure_demo_image_model

    ensure_demo_image_model(load_settings({}, home=str(home)))


def start_server(snapshot: Path, home: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-m", "qwenhome.app.serve", "--home", str(home), "--model", MODEL_ID,
                             "--snapshot", str(snapshot), "--port", str(port)], env=env,
                            # In a session of its own, as the launcher starts it: where the kernel
                            # shares the CPU by session (autogroup), this bench's client threads
                            # are then not charged to the server's share.
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become ready")


def setup(tmp: Path, model: Path | None, threads: int, nice: int,
          shape: str = "small") -> tuple[Path, Direct, subprocess.Popen[bytes], str]:
    """The model (``model``, or one of ``shape`` built in ``tmp``), a home with
    the image model, the direct side and the API server on them."""
    snapshot = model or build_model(tmp / "model", shape)
    home = tmp / "home"
    home_with_image_model(home)
    direct = Direct(snapshot, threads, nice)
    proc, url = start_server(snapshot, home, threads)
    return snapshot, direct, proc, url


class Load:
    """Background work against the server: image jobs one after another, and/or
    ``streams`` chats kept in flight."""

    def __init__(self, url: str, images: bool, streams: int, tokens: int) -> None:
        self.url, self.images, self.streams, self.tokens = url, images, streams, tokens
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.chats = 0
        self.image_jobs = 0
        self.image_busy = threading.Event()

    def _images(self) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=600) as c:
            while not self.stop.is_set():
                job = c.post("/api/images/jobs", json=IMAGE_JOB).json()
                while not self.stop.is_set():
                    state = c.get(f"/api/jobs/{job['id']}").json()["state"]
                    if state == "running":
                        self.image_busy.set()
                    if state in ("succeeded", "failed", "cancelled"):
                        self.image_jobs += 1
                        break
                    time.sleep(0.2)
                if self.stop.is_set():
                    c.post(f"/api/jobs/{job['id']}/cancel")

    def _chat(self) -> None:
        import httpx

        with httpx.Client(timeout=600) as c:
            while not self.stop.is_set():
                server_run(self.url, self.tokens, c)
                self.chats += 1

    def __enter__(self) -> Load:
        work: list[Callable[[], None]] = ([self._images] if self.images else []) + [self._chat] * self.streams
        self.threads = [threading.Thread(target=w, daemon=True) for w in work]
        for t in self.threads:
            t.start()
        if self.images:
            self.image_busy.wait(120)
        time.sleep(1.0 if self.streams else 0.2)  # every stream connected and queued
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(600)


def probe_health(url: str, seconds: float, interval: float = 0.02) -> list[float]:
    """GET /health every ``interval`` s for ``seconds``, on one kept-alive connection; latencies in s."""
    import httpx

    out: list[float] = []
    with httpx.Client(timeout=10) as c:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            r = c.get(f"{url}/health")
            out.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
            time.sleep(interval)
    return out


def loop_thread_times(pid: int) -> tuple[float, float] | None:
    """(CPU seconds, seconds spent runnable but waiting for a CPU) of the
    server's main thread, its event loop, from /proc (None elsewhere): the
    first says what the loop did, the second what the machine's load cost it."""
    try:
        cpu, wait, _ = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return None
    return int(cpu) / 1e9, int(wait) / 1e9


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="a local chat model folder / snapshot")
    ap.add_argument("--shape", choices=SHAPES, default="qwen2.5-0.5b",
                    help="the model built here when no --model is given (default: the default chat model's shape)")
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each /health scenario")
    ap.add_argument("--health-p99", type=float, default=20.0, help="goal for /health p99 under full load, ms")
    ap.add_argument("--json-out", type=Path, default=None,
                    help="write the result here instead of bench/results/serve-<time>.json")
    ap.add_argument("--direct-child", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--nice", type=int, default=WorkerOptions().nice, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.direct_child is not None:
        return direct_child(args.direct_child, args.threads, args.nice)

    import httpx

    doc = result_header("serve", sys.argv[1:])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="qwenhome-bench-serve-") as tmp:
        snapshot, direct, proc, url = setup(Path(tmp), args.model, args.threads, args.nice, args.shape)
        try:
            # One client kept alive, as the openai package keeps one: a new
            # httpx client per request builds an SSL context first (23-58 ms
            # here), which serve-20261207-064934.json counted as the API's TTFT.
            client = httpx.Client(timeout=600)
            direct.run(8)  # warm-up both sides
            server_run(url, 8, client)
            d_runs, s_runs = [], []
            for _ in range(args.runs):  # interleaved, so drift hits both alike
                d_runs.append(direct.run(args.tokens))
                s_runs.append(server_run(url, args.tokens, client))
            client.close()
            direct.close()  # its torch stays out of the way of the scenarios below
            scenarios: list[tuple[str, list[float], Load, dict[str, float]]] = []
            for name, images, streams in (("idle", False, 0), ("image generating", True, 0),
                                          (f"{STREAMS} chats streaming", False, STREAMS),
                                          (f"image + {STREAMS} chats", True, STREAMS)):
                with Load(url, images, streams, args.tokens * 2) as load:
                    before = loop_thread_times(proc.pid)
                    latencies = probe_health(url, args.seconds)
                    after = loop_thread_times(proc.pid)
                loop = {} if before is None or after is None else {
                    "loop_cpu_s": round(after[0] - before[0], 3), "loop_runqueue_wait_s": round(after[1] - before[1], 3)}
                scenarios.append((name, latencies, load, {**loop, "loadavg": os.getloadavg()[0]}))
        finally:
            proc.terminate()
            proc.wait(60)

    def summary(runs: list[tuple[float, float, int]]) -> tuple[float, float, int, float, float]:
        """Medians (TTFT, tokens/s, tokens), then the best TTFT and tokens/s:
        the run the machine's other load disturbed least."""
        ttfts = [r[0] for r in runs]
        rates = [r[2] / (r[1] - r[0]) for r in runs if r[2] > 1]  # decode rate after the first token
        return (statistics.median(ttfts), statistics.median(rates), int(statistics.median(r[2] for r in runs)),
                min(ttfts), max(rates))

    d_ttft, d_tps, d_n, d_best_ttft, d_best_tps = summary(d_runs)
    s_ttft, s_tps, s_n, s_best_ttft, s_best_tps = summary(s_runs)
    ttft_ratio = s_ttft / d_ttft
    tps_ratio = s_tps / d_tps
    load_after = os.getloadavg()
    print(f"model: {snapshot if args.model else SHAPES[args.shape][0]}; {args.runs} runs, "
          f"{args.tokens} new tokens, greedy, {args.threads} threads, {os.cpu_count()} cores; "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"{'chat (medians; best)':28}{'TTFT (ms)':>12}{'tokens/s':>12}{'tokens':>8}{'best TTFT':>11}{'best tok/s':>12}")
    print(f"{'direct generate()':28}{d_ttft * 1000:12.1f}{d_tps:12.1f}{d_n:8d}{d_best_ttft * 1000:11.1f}{d_best_tps:12.1f}")
    print(f"{'API (worker, SSE over HTTP)':28}{s_ttft * 1000:12.1f}{s_tps:12.1f}{s_n:8d}"
          f"{s_best_ttft * 1000:11.1f}{s_best_tps:12.1f}")
    print(f"{'API / direct':28}{ttft_ratio:12.3f}{tps_ratio:12.3f}{'':8}"
          f"{s_best_ttft / d_best_ttft:11.3f}{s_best_tps / d_best_tps:12.3f}")
    print()
    print(f"{'/health while':28}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'chats':>7}{'images':>8}"
          f"{'loop CPU %':>12}{'loop wait %':>13}{'load':>6}")
    for name, lat, load, loop in scenarios:
        busy = f"{loop['loop_cpu_s'] / args.seconds:12.1%}{loop['loop_runqueue_wait_s'] / args.seconds:13.1%}" \
            if "loop_cpu_s" in loop else f"{'':25}"
        print(f"{name:28}{len(lat):6d}{pct(lat, .5) * 1e3:9.1f}{pct(lat, .99) * 1e3:9.1f}{max(lat) * 1e3:9.1f}"
              f"{load.chats:7d}{load.image_jobs:8d}{busy}{loop['loadavg']:6.1f}")
    full = scenarios[-1][1]
    chat_ok = ttft_ratio <= 1 + args.tolerance and tps_ratio >= 1 - args.tolerance
    health_ok = pct(full, .99) * 1e3 < args.health_p99
    print(f"chat overhead {'within' if chat_ok else 'outside'} {args.tolerance:.0%}; "
          f"/health p99 under full load {'under' if health_ok else 'over'} {args.health_p99:g} ms")
    doc.update({
        "model": str(args.model) if args.model else SHAPES[args.shape][0], "runs": args.runs,
        "tokens": args.tokens, "threads": args.threads, "seconds": args.seconds,
        "chat": {"direct": {"ttft_ms": round(d_ttft * 1e3, 1), "tokens_per_s": round(d_tps, 1), "tokens": d_n,
                            "best_ttft_ms": round(d_best_ttft * 1e3, 1), "best_tokens_per_s": round(d_best_tps, 1)},
                 "api": {"ttft_ms": round(s_ttft * 1e3, 1), "tokens_per_s": round(s_tps, 1), "tokens": s_n,
                         "best_ttft_ms": round(s_best_ttft * 1e3, 1), "best_tokens_per_s": round(s_best_tps, 1)},
                 "ttft_ratio": round(ttft_ratio, 3), "tps_ratio": round(tps_ratio, 3), "tolerance": args.tolerance,
                 "runs": {"direct": d_runs, "api": s_runs}},
        "health": [{"while": name, "n": len(lat), "p50_ms": round(pct(lat, .5) * 1e3, 2),
                    "p99_ms": round(pct(lat, .99) * 1e3, 2), "max_ms": round(max(lat) * 1e3, 2),
                    "chats_done": load.chats, "images_done": load.image_jobs, **loop}
                   for name, lat, load, loop in scenarios],
        "goals": {"chat_within_tolerance": chat_ok, "health_p99_ms": args.health_p99, "health_ok": health_ok},
    })
    print(f"wrote {write_result(doc, args.json_out)}")
    return 0 if chat_ok and health_ok else 1


if __name__ == "__main__":
    sys.exit(main())
