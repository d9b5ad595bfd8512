"""qwenhome's Xet client against stock hf_xet (and huggingface_hub over the
resolve bridge) on the same Xet server (issue 23).

    .venv/bin/python bench/xet.py                                 # 2 x 200 MB, every scenario, 1 repeat
    .venv/bin/python bench/xet.py --size-mb 100 --repeat 3 --scenarios none capped

The server is the project's mirror with Xet on (``bench/_server.py --store
--xet``, its own process): token route, reconstructions, signed xorb ranges,
all on its port; its blobs are chunked once before anything is measured.
Each tool runs as its own process in a fresh folder, and every file it
leaves is checked (size, sha256) afterwards.

* ``qwenhome``: ``qwenhome pull`` (Xet: reconstructions, xorb ranges, the
  sha256 checked before a file is visible);
* ``hf_xet``: ``huggingface_hub.snapshot_download`` with ``hf_xet``;
* ``hf plain``: the same with ``HF_HUB_DISABLE_XET=1``: the resolve bridge.

Throughput scenarios (the server shapes itself, per TCP connection and per
request, as the transfer benchmark's own server does): ``none`` (no limit),
``capped`` (20 MB/s per connection + 20 ms per request), ``latency``
(50 ms per request), ``xorb-capped`` (the xorb route alone at 20 MB/s per
connection, the resolve bridge not; 20 ms per request everywhere),
``xorb-slow`` (the same at 2 MB/s per xorb connection: there qwenhome's
bridge ranges should carry most of a Xet file), ``xet-only`` (no limit, and
the resolve bridge refuses every body with a 403, as the Hub does for very
large files: Xet alone serves them; ``hf plain`` is not run there).
Reported: wall time, MB/s, the ratio to hf_xet (goal:
at least 1.3 in every scenario), the client's CPU seconds per GB (goal: no
more than hf_xet's), bytes the server sent.

``update``: two files, the second revision about 10% changed (in-place edits
and a 1 MiB insertion). Each tool pulls the first revision, then the second
is measured: bytes the server sent (goal for qwenhome: at most 1.2x the
chunk data that is really new, computed here by Xet chunking), time, and
the disk its folder uses afterwards (blocks, hard links once: the cache and
any chunk cache the tool keeps beside it).

``--data weights`` fills the files with bf16 values of a normal
distribution instead of random bytes (their exponent bytes repeat, as a
model's do); ``--compression auto`` has the server store its xorbs as the
Hub does (per chunk the smaller of LZ4 and BG4-LZ4, where it is smaller),
so the clients decompress; ``--split-hosts`` puts the reconstructions and
the xorb bytes each on a port of their own, as the Hub's CAS and xorb
hosts are separate.

``--base SRC`` adds the tool ``qwenhome base``: qwenhome from another
source tree (e.g. ``git archive <commit> src | tar -x -C /tmp/base``), run
alternately with this one; the table then gives each qwenhome run's ratio
to it as well.

Writes ``bench/results/xet-<time>.json``.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH,
    MB,
    ROOT,
    MiB,
    ServerProcess,
    clean_env,
    cpu_s_per_gb,
    median,
    result_header,
    run_measured,
    verify_files,
    write_result,
)

sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from qwenhome.xet import chunk_hash  # noqa: E402
from qwenhome.xet.chunking import iter_chunks  # noqa: E402
from tests.support.repos import make_repo, make_store_repo  # noqa: E402

TOOLS = ("qwenhome", "hf_xet", "hf plain")
BASE = "qwenhome base"
SCENARIOS: dict[str, tuple[float | None, float | None]] = {  # name -> (bytes/s per connection, s per request)
    "none": (None, None),
    "capped": (20 * MB, 0.02),
    "latency": (None, 0.05),
    "xorb-capped": (20 * MB, 0.02),
    "xorb-slow": (2 * MB, 0.02),
    "xet-only": (None, None),
}
REFUSING = {"xet-only"}  # scenarios whose resolve bridge refuses file bodies
BASE_SRC: Path | None = None  # (--base)
SERVER_ARGS: list[str] = []  # (--compression, --split-hosts)
DATA = "random"  # (--data)
CAPPED_ON = {"xorb-capped": "xorb", "xorb-slow": "xorb"}  # scenario -> the one route kind paced
THROUGHPUT_REPO, UPDATE_REPO = "Bench/XetThroughput", "Bench/XetUpdate"
OLD, NEW = "1" * 40, "2" * 40


@dataclass
class Run:
    tool: str
    scenario: str
    ok: bool
    wall_s: float
    cpu_s: float
    nbytes: int
    sent: dict[str, int] = field(default_factory=dict)  # bytes the server sent, per kind of route
    problems: list[str] = field(default_factory=list)
    disk_bytes: int | None = None

    @property
    def mbps(self) -> float:
        return self.nbytes / MB / self.wall_s if self.ok and self.wall_s else 0.0


def _bytes(size: int, seed: int) -> bytes:
    """``size`` bytes without repeats: random ones, or (``--data weights``)
    bf16 values of a normal distribution, as a model's tensors hold: their
    exponent bytes repeat, so BG4-LZ4 shrinks them as it does real weights."""
    if DATA == "random":
        return random.Random(seed).randbytes(size)
    import numpy as np

    rng = np.random.default_rng(seed)
    out = bytearray()
    while len(out) < size:
        step = min(size - len(out), 16 * MiB)
        f32 = rng.normal(0.0, 0.02, (step + 1) // 2).astype(np.float32)
        out += (f32.view(np.uint32) >> 16).astype(np.uint16).tobytes()[:step]
    return bytes(out)


def _edit(data: bytes, seed: int, *, edits: int, size: int, insert: int = 0) -> bytes:
    """``edits`` spread in-place rewrites of ``size`` bytes, and ``insert`` new bytes at 40%."""
    out = bytearray(data)
    n = len(data)
    for k in range(edits):
        at = (2 * k + 1) * n // (2 * edits + 1)
        out[at:at + size] = _bytes(size, seed + k)
    cut = 2 * n // 5
    return bytes(out[:cut]) + _bytes(insert, seed + 99) + bytes(out[cut:])


def new_chunk_bytes(old: Sequence[bytes], new: Sequence[bytes]) -> int:
    """Bytes of the chunks of ``new`` that no file of ``old`` has (Xet chunking)."""
    have = {chunk_hash(c) for data in old for c in iter_chunks(io.BytesIO(data))}
    seen: set[bytes] = set()
    total = 0
    for data in new:
        for c in iter_chunks(io.BytesIO(data)):
            h = chunk_hash(c)
            if h not in have and h not in seen:
                seen.add(h)
                total += len(c)
    return total


def build(work: Path, size: int, files: int) -> tuple[Path, dict[str, dict[str, tuple[int, str]]], int]:
    """The hub cache the server serves: the throughput repository, and the
    update repository's two revisions (the old one's blobs older, so the
    server's chunking dedups the new one against them, as the Hub's upload
    does). Returns it, the expected (size, sha256) per repo@revision, and
    the new chunk data of the update."""
    hub = work / "served"
    src = work / "src"
    expected: dict[str, dict[str, tuple[int, str]]] = {}
    repo = make_repo(src / "t", THROUGHPUT_REPO, {f"model-{i:05d}.safetensors": _bytes(size, i) for i in range(files)})
    make_store_repo(hub, repo, commit=OLD)
    expected[THROUGHPUT_REPO] = {rel: (f.size, f.sha256) for rel, f in repo.files.items()}
    half = max(MiB, size // 2)
    old = {"a.safetensors": _bytes(half, 101), "b.safetensors": _bytes(half, 102)}
    new = {"a.safetensors": _edit(old["a.safetensors"], 110, edits=2, size=half // 40, insert=MiB),
           "b.safetensors": _edit(old["b.safetensors"], 120, edits=4, size=half // 40)}
    first = make_store_repo(hub, make_repo(src / "u0", UPDATE_REPO, old), commit=OLD, ref="old")
    for blob in (first.parent.parent / "blobs").iterdir():
        os.utime(blob, (1_000_000, 1_000_000))
    second = make_repo(src / "u1", UPDATE_REPO, new)
    make_store_repo(hub, second, commit=NEW)
    expected[f"{UPDATE_REPO}@{NEW}"] = {rel: (f.size, f.sha256) for rel, f in second.files.items()}
    fresh = new_chunk_bytes(list(old.values()), list(new.values()))
    shutil.rmtree(src)
    return hub, expected, fresh


def invocation(tool: str, url: str, repo: str, rev: str | None, run_dir: Path) -> tuple[list[str], dict[str, str], Path]:
    """argv, environment, and the folder the files land in (its snapshot)."""
    user = {"HOME": str(run_dir / "user")}
    if tool in ("qwenhome", BASE):
        home = run_dir / "home"
        argv = [sys.executable, "-m", "qwenhome", "pull", repo + (f"@{rev}" if rev else ""), "--source", url]
        base = {"PYTHONPATH": str(BASE_SRC)} if tool == BASE and BASE_SRC else {}
        return argv, clean_env({"QWEN_HOME": str(home), **user, **base}), home / "hub"
    cache = run_dir / "cache"
    env = clean_env({"HF_HOME": str(run_dir / "hf-home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                     "HF_HUB_DISABLE_TELEMETRY": "1", "HF_XET_TELEMETRY_ENABLED": "0", **user,
                     **({"HF_HUB_DISABLE_XET": "1"} if tool == "hf plain" else {})})
    kind = "hf_xet" if tool == "hf_xet" else "hf_hub"
    argv = [sys.executable, str(BENCH / "_clients.py"), kind, url, repo, str(cache), *([rev] if rev else [])]
    return argv, env, cache


def snapshot(cache: Path, repo: str, rev: str | None) -> Path:
    snaps = cache / f"models--{repo.replace('/', '--')}" / "snapshots"
    if rev:
        return snaps / rev
    found = sorted(snaps.glob("*"))
    return found[-1] if found else snaps / "missing"


def disk_usage(folder: Path) -> int:
    """Bytes of disk blocks under ``folder``, each inode once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def measure(tool: str, scenario: str, server: ServerProcess, repo: str, rev: str | None,
            expected: dict[str, tuple[int, str]], run_dir: Path, timeout: float) -> Run:
    argv, env, cache = invocation(tool, server.url, repo, rev, run_dir)
    server.mark()
    m = run_measured(argv, env=env, cwd=run_dir, timeout=timeout, log_dir=run_dir / f"log-{rev or 'main'}")
    stats = server.stats()
    problems = [] if m.returncode == 0 else [f"exit {m.returncode}: {m.stderr[-400:]}"]
    if not problems:
        problems = verify_files(snapshot(cache, repo, rev), expected)
    nbytes = sum(s for s, _ in expected.values())
    return Run(tool, scenario, not problems, round(m.wall_s, 3), round(m.cpu_s, 3), nbytes,
               {k: int(v) for k, v in stats.get("bytes_per_kind", {}).items()}, problems)


def throughput(args: argparse.Namespace, hub: Path, records: Path, expected: dict[str, tuple[int, str]],
               work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sc in args.scenarios:
        if sc == "update":
            continue
        bandwidth, latency = SCENARIOS[sc]
        tools = [t for t in args.tools if not (sc in REFUSING and t == "hf plain")]  # (it has no other path)
        runs: dict[str, list[Run]] = {t: [] for t in tools}
        with _server(hub, records, bandwidth, latency, CAPPED_ON.get(sc), refuse_bridge=sc in REFUSING) as server:
            for i in range(args.repeat):
                for tool in tools:  # interleaved, so that the machine's noise hits every tool
                    run_dir = Path(tempfile.mkdtemp(prefix=f"{sc}-{tool.replace(' ', '_')}-", dir=work))
                    r = measure(tool, sc, server, THROUGHPUT_REPO, None, expected, run_dir, args.timeout)
                    runs[tool].append(r)
                    print(f"  {sc:8} {tool:9} #{i + 1}: {r.mbps:7.1f} MB/s  cpu {r.cpu_s:6.2f} s"
                          + ("" if r.ok else f"  FAILED {r.problems[:2]}"), flush=True)
                    shutil.rmtree(run_dir, ignore_errors=True)
        out[sc] = {t: _summary(rs) for t, rs in runs.items()}
    return out


def _summary(rs: list[Run]) -> dict[str, Any]:
    good = [r for r in rs if r.ok]
    mid = sorted(good, key=lambda r: r.wall_s)[len(good) // 2] if good else rs[0]
    return {"ok": len(good), "runs": len(rs), "wall_s": median([r.wall_s for r in good]) if good else None,
            "mbps": round(median([r.mbps for r in good]), 1) if good else 0.0,
            "cpu_s_per_gb": cpu_s_per_gb(median([r.cpu_s for r in good]), mid.nbytes) if good else None,
            "sent": mid.sent, "all": [asdict(r) for r in rs]}


def update(args: argparse.Namespace, hub: Path, records: Path, expected: dict[str, tuple[int, str]],
           fresh: int, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"new_chunk_bytes": fresh, "new_revision_bytes": sum(s for s, _ in expected.values())}
    with _server(hub, records, None, None) as server:
        for tool in args.tools:
            run_dir = Path(tempfile.mkdtemp(prefix=f"update-{tool.replace(' ', '_')}-", dir=work))
            argv, env, _ = invocation(tool, server.url, UPDATE_REPO, OLD, run_dir)
            first = run_measured(argv, env=env, cwd=run_dir, timeout=args.timeout, log_dir=run_dir / "log-old")
            if first.returncode != 0:
                out[tool] = {"ok": False, "problems": [f"first revision: exit {first.returncode}"]}
                continue
            r = measure(tool, "update", server, UPDATE_REPO, NEW, expected, run_dir, args.timeout)
            r.disk_bytes = disk_usage(run_dir)
            fetched = sum(r.sent.values())
            out[tool] = {**asdict(r), "fetched": fetched, "fetched_vs_new_chunks": round(fetched / fresh, 3)}
            print(f"  update   {tool:9}: {fetched / MB:7.1f} MB fetched ({fetched / fresh:.2f}x the new chunks), "
                  f"{r.wall_s:.2f} s, disk {r.disk_bytes / MB:.1f} MB" + ("" if r.ok else f" FAILED {r.problems}"),
                  flush=True)
            shutil.rmtree(run_dir, ignore_errors=True)
    return out


def _server(hub: Path, records: Path, bandwidth: float | None, latency: float | None,
            paced: str | None = None, refuse_bridge: bool = False) -> ServerProcess:
    argv = [sys.executable, str(BENCH / "_server.py"), "--store", str(hub), "--xet", str(records),
            *(["--bandwidth", str(bandwidth)] if bandwidth else []), *(["--latency", str(latency)] if latency else []),
            *(["--bandwidth-on", paced] if paced else []), *(["--refuse-bridge"] if refuse_bridge else []),
            *SERVER_ARGS]
    return ServerProcess(hub, bandwidth=bandwidth, latency=latency, argv=argv)


def table(doc: dict[str, Any]) -> str:
    lines = [f"{'scenario':11} {'tool':13} {'MB/s':>7} {'x hf_xet':>8} {'x base':>6} {'CPU s/GB':>8} "
             f"{'sent MB':>8} {'xorb MB':>8}"]
    for sc, tools in doc["throughput"].items():
        ref = tools.get("hf_xet", {}).get("mbps") or 0
        base = tools.get(BASE, {}).get("mbps") or 0
        for tool, s in tools.items():
            ratio = f"{s['mbps'] / ref:.2f}" if ref else "-"
            vs_base = f"{s['mbps'] / base:.2f}" if base and tool == "qwenhome" else "-"
            lines.append(f"{sc:11} {tool:13} {s['mbps']:7.1f} {ratio:>8} {vs_base:>6} {s['cpu_s_per_gb'] or 0:8.2f} "
                         f"{sum(s['sent'].values()) / MB:8.1f} {s['sent'].get('xorb', 0) / MB:8.1f}")
    up = doc.get("update")
    if up:
        lines.append(f"\nupdated revision: {up['new_revision_bytes'] / MB:.1f} MB, "
                     f"{up['new_chunk_bytes'] / MB:.1f} MB of it new chunks")
        lines.append(f"{'tool':9} {'fetched MB':>10} {'x new':>6} {'s':>6} {'disk MB':>8}")
        for tool in (*TOOLS, BASE):
            u = up.get(tool)
            if u and u.get("ok"):
                lines.append(f"{tool:9} {u['fetched'] / MB:10.1f} {u['fetched_vs_new_chunks']:6.2f} "
                             f"{u['wall_s']:6.2f} {u['disk_bytes'] / MB:8.1f}")
            elif u:
                lines.append(f"{tool:9} FAILED {u.get('problems')}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=200, help="size of each throughput file (MiB)")
    ap.add_argument("--files", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--tools", nargs="+", default=list(TOOLS), choices=(*TOOLS, BASE))
    ap.add_argument("--base", type=Path, default=None, help="the src folder of the qwenhome to compare with")
    ap.add_argument("--scenarios", nargs="+", default=[*SCENARIOS, "update"], choices=[*SCENARIOS, "update"])
    ap.add_argument("--data", choices=("random", "weights"), default="random",
                    help="the files' bytes: random (incompressible), or bf16 weights (BG4-LZ4 shrinks them)")
    ap.add_argument("--compression", choices=("none", "lz4", "auto"), default="none",
                    help="how the server stores its xorbs (auto: per chunk the smaller of LZ4 and BG4-LZ4, "
                         "as the Hub does)")
    ap.add_argument("--split-hosts", action="store_true",
                    help="reconstructions and xorb bytes each on a port of their own")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    global BASE_SRC, DATA, SERVER_ARGS
    BASE_SRC, DATA = args.base, args.data
    SERVER_ARGS = ["--xet-compression", args.compression, *(["--split-hosts"] if args.split_hosts else [])]
    if args.base is not None and BASE not in args.tools:
        args.tools.insert(1, BASE)
    doc = result_header("xet", argv)
    with tempfile.TemporaryDirectory(prefix="qh-bench-xet-") as tmp:
        work = Path(tmp)
        print("building the repositories...", flush=True)
        hub, expected, fresh = build(work, args.size_mb * MiB, args.files)
        records = work / "records"
        print("chunking them on the server...", flush=True)
        with _server(hub, records, None, None):
            pass
        doc["throughput"] = throughput(args, hub, records, expected[THROUGHPUT_REPO], work)
        if "update" in args.scenarios:
            doc["update"] = update(args, hub, records, expected[f"{UPDATE_REPO}@{NEW}"], fresh, work)
    doc["table"] = table(doc)
    print(doc["table"])
    print(f"wrote {write_result(doc, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
