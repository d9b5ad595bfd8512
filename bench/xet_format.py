"""The Xet format's speed: qwenhome.xet against hf_xet (the reference client, Rust) on one file.

    .venv/bin/python bench/xet_format.py                     # 512 MB, 3 repeats
    .venv/bin/python bench/xet_format.py --size-mb 128 --repeat 1

Each row is a fresh process over the same generated file (random bytes with
runs of zeros, so that some chunks repeat), in an order rotated every repeat;
the table gives medians of wall and CPU seconds (the child's own rusage),
MB/s, CPU s/GB and the ratio of CPU s/GB to hf_xet's. The rows:

  hf_xet hash_files       chunking + chunk hashes + file hash (the peer)
  qwenhome hash t=1/t=2   the same (qwenhome.xet chunking with 1 or 2 threads + blake3)
  qwenhome chunk t=1      chunk boundaries only
  qwenhome build lz4      what an uploader does: chunk, hash, LZ4 each chunk, pack xorbs, sha256

Every hash row must give hf_xet's hash (checked: a mismatch fails the run).
The machine is shared, so CPU s/GB is the figure that carries; throughput
moves with the load. Writes ``bench/results/xet_format-<time>.json``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import clean_env, cpu_s_per_gb, loadavg, result_header, run_measured, write_result

PEER = "hf_xet hash_files"
ROWS: dict[str, str] = {
    PEER: "import hf_xet, sys; print(hf_xet.hash_files([sys.argv[1]])[0].hash)",
    "qwenhome hash t=1": (
        "import sys; from qwenhome.xet import chunk_hash, file_hash, hash_to_hex, iter_chunks\n"
        "with open(sys.argv[1], 'rb') as f:\n"
        "    print(hash_to_hex(file_hash((chunk_hash(c), len(c)) for c in iter_chunks(f, threads=1))))"),
    "qwenhome hash t=2": (
        "import sys; from qwenhome.xet import chunk_hash, file_hash, hash_to_hex, iter_chunks\n"
        "with open(sys.argv[1], 'rb') as f:\n"
        "    print(hash_to_hex(file_hash((chunk_hash(c), len(c)) for c in iter_chunks(f, threads=2))))"),
    "qwenhome chunk t=1": (
        "import sys; from qwenhome.xet import iter_chunks\n"
        "with open(sys.argv[1], 'rb') as f:\n"
        "    print(sum(1 for _ in iter_chunks(f)), 'chunks')"),
    "qwenhome build lz4": (
        "import sys; from qwenhome.xet import build_file, Policy\n"
        "print(build_file(sys.argv[1], lambda x: None, policy=Policy.LZ4).file_hash)"),
}


def make_file(path: Path, size_mb: int) -> int:
    rng = random.Random(0)
    with open(path, "wb") as fh:
        for i in range(size_mb):
            fh.write(bytes(1 << 20) if i % 16 == 15 else rng.randbytes(1 << 20))
    return size_mb << 20


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    doc = result_header("xet_format", argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="xet-format-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "file.bin"
    size = make_file(data, args.size_mb)
    # hf_xet writes logs and caches under HF_HOME: keep them in the work folder.
    env = clean_env({"HOME": str(work / "home"), "HF_HOME": str(work / "hf")})
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in ROWS}
    outputs: dict[str, str] = {}
    names = list(ROWS)
    for rep in range(args.repeat):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            m = run_measured([sys.executable, "-c", ROWS[name], str(data)], env=env, cwd=work,
                             timeout=1800, log_dir=work / "logs" / name.replace(" ", "_").replace("=", ""))
            if m.returncode != 0:
                print(f"{name} failed: {m.stderr[-500:]}", file=sys.stderr)
                return 1
            outputs[name] = m.stdout.strip().splitlines()[-1]
            runs[name].append({"wall_s": m.wall_s, "cpu_s": m.cpu_s, "rss_mb": m.peak_rss_mb,
                               "loadavg": loadavg()[0]})
    expected = outputs[PEER]
    wrong = [n for n in ROWS if "chunk t=" not in n and outputs[n] != expected]
    if wrong:
        print(f"hash differs from hf_xet's {expected}: {wrong}", file=sys.stderr)
        return 1
    table = []
    peer_cpu = statistics.median(r["cpu_s"] for r in runs[PEER])
    for name, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        cpu = statistics.median(r["cpu_s"] for r in rs)
        table.append({"row": name, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                      "mbps": round(size / wall / 1e6, 1), "cpu_s_per_gb": cpu_s_per_gb(cpu, size),
                      "cpu_vs_hf_xet": round(cpu / peer_cpu, 2), "rss_mb": round(max(r["rss_mb"] for r in rs)),
                      "output": outputs[name]})
    doc.update({"size": size, "repeat": args.repeat, "runs": runs, "table": table})
    path = write_result(doc)
    print(f"{args.size_mb} MiB, medians of {args.repeat}; load average {doc['loadavg_before'][0]} -> "
          f"{doc['loadavg_after'][0]}; hash {expected}")
    print(f"{'row':22s} {'wall s':>7s} {'CPU s':>7s} {'MB/s':>7s} {'CPU s/GB':>9s} {'CPU ÷ hf_xet':>12s}")
    for r in table:
        print(f"{r['row']:22s} {r['wall_s']:7.2f} {r['cpu_s']:7.2f} {r['mbps']:7.0f} {r['cpu_s_per_gb']:9.2f} "
              f"{r['cpu_vs_hf_xet']:12.2f}")
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
