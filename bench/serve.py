"""Server overhead: time to first token and tokens per second through the API
(a real ``qwenhome.app.serve`` process, streamed over HTTP) against calling
``generate`` directly on the same model in this process.

    python bench/serve.py                      # a 4-layer Qwen2 built locally (random weights)
    python bench/serve.py --model PATH         # any local model folder / snapshot
    python bench/serve.py --runs 7 --tokens 128

Greedy decoding and a fixed prompt make both sides produce the same tokens.
Prints a table with medians and the server/direct ratios; exits 1 when a
ratio is worse than --tolerance (default 10 %).
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
import time
from pathlib import Path
from typing import Any

MODEL_ID = "bench/qwen2-small"
PROMPT = [{"role": "user", "content": "Write a long story about a model that lives in a home."}]


def build_model(dest: Path) -> Path:
    from qwenhome.demo.tinymodel import TinySpec, build_tiny_qwen2

    # Bigger than the demo model so that compute, not Python, dominates a step.
    spec = TinySpec(hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6,
                    num_key_value_heads=2, max_position_embeddings=2048, train_steps=0)
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

    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    streamer = FirstText()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                             streamer=streamer, pad_token_id=tokenizer.pad_token_id)
    total = time.perf_counter() - t0
    assert streamer.first is not None
    return streamer.first - t0, total, int(out.shape[-1] - ids["input_ids"].shape[-1])


def server_run(url: str, tokens: int) -> tuple[float, float, int]:
    import httpx

    body = {"model": MODEL_ID, "messages": PROMPT, "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True}
    first = None
    usage = 0
    t0 = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as r:
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


def start_server(snapshot: Path, home: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-m", "qwenhome.app.serve", "--home", str(home), "--model", MODEL_ID,
                             "--snapshot", str(snapshot), "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).json().get("status") == "ready":
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become ready")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="qwenhome-bench-serve-") as tmp:
        snapshot = args.model or build_model(Path(tmp) / "model")
        tokenizer = AutoTokenizer.from_pretrained(snapshot, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(snapshot, local_files_only=True, dtype=torch.float32).eval()
        proc, url = start_server(snapshot, Path(tmp) / "home", args.threads)
        try:
            direct_run(model, tokenizer, 8)  # warm-up both sides
            server_run(url, 8)
            d_runs, s_runs = [], []
            for _ in range(args.runs):  # interleaved, so drift hits both alike
                d_runs.append(direct_run(model, tokenizer, args.tokens))
                s_runs.append(server_run(url, args.tokens))
        finally:
            proc.terminate()
            proc.wait(30)

    def summary(runs: list[tuple[float, float, int]]) -> tuple[float, float, int]:
        ttft = statistics.median(r[0] for r in runs)
        tps = statistics.median(r[2] / (r[1] - r[0]) for r in runs if r[2] > 1)  # decode rate after the first token
        return ttft, tps, int(statistics.median(r[2] for r in runs))

    d_ttft, d_tps, d_n = summary(d_runs)
    s_ttft, s_tps, s_n = summary(s_runs)
    ttft_ratio = s_ttft / d_ttft
    tps_ratio = s_tps / d_tps
    print(f"model: {snapshot if args.model else 'Qwen2 6x384 (built locally)'}; {args.runs} runs, "
          f"{args.tokens} new tokens, greedy, {args.threads} threads")
    print(f"{'':22}{'TTFT (ms)':>12}{'tokens/s':>12}{'tokens':>8}")
    print(f"{'direct generate()':22}{d_ttft * 1000:12.1f}{d_tps:12.1f}{d_n:8d}")
    print(f"{'API (SSE over HTTP)':22}{s_ttft * 1000:12.1f}{s_tps:12.1f}{s_n:8d}")
    print(f"{'server / direct':22}{ttft_ratio:12.3f}{tps_ratio:12.3f}")
    ok = ttft_ratio <= 1 + args.tolerance and tps_ratio >= 1 - args.tolerance
    print("within tolerance" if ok else f"outside the {args.tolerance:.0%} tolerance")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
