"""Offline benchmark: how long a cached model takes to come back without the
network, qwenhome against the same call in stock huggingface_hub, like with like.

Pairs (each side a fresh process, the model already in each tool's own cache):

  no network asked for, by the API:
    qwenhome path REPO                    snapshot_download(REPO, local_files_only=True)
  no network asked for, by the environment (HF_HUB_OFFLINE=1 for both):
    qwenhome pull REPO                    snapshot_download(REPO)
  the default call, with the Hub address broken (HF_ENDPOINT for both):
    qwenhome pull REPO  (first call)      snapshot_download(REPO)  (first call)
    qwenhome pull REPO  (second call)     snapshot_download(REPO)  (second call)

qwenhome's first call probes the network and remembers the verdict (its
netstate file is deleted before every first call); stock huggingface_hub
remembers nothing, so its second call is timed too rather than assumed.

Broken states of the Hub address (all on this machine, nothing leaves it):
  dns      a name that does not resolve (``*.invalid``)
  refused  a 127.0.0.1 port where nothing listens
  backlog  a listening socket that never accepts (kernel handshake only)
  silent   a socket that accepts and never replies

Every pair runs ``--repeat`` times, the two sides in alternating order, and
the medians of wall and CPU seconds are reported (a run past ``--cap`` is
killed and counted at the cap). A run that does not exit 0 with the
snapshot's folder on stdout is marked. Python's own start-up (``import
huggingface_hub`` / ``import qwenhome.cli``) is measured the same way.

Then adoption (``--adopt-gb``): a hub cache holding a model of that size is
adopted with ``qwenhome adopt`` (fresh process and home, ``--repeat`` times):
wall and CPU time, and the extra disk used by the home (blocks not shared by
hard link with the other cache). The endpoint is unreachable, so any network
use would fail it.

    .venv/bin/python bench/offline.py [--repeat 5] [--cap 60] [--adopt-gb 1]

Writes ``bench/results/offline-<time>.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "bench")]

from _common import result_header, run_measured, write_result  # noqa: E402

from qwenhome.config import load_settings  # noqa: E402
from qwenhome.mirror import FolderBackend  # noqa: E402
from qwenhome.pull import pull  # noqa: E402
from qwenhome.store import RepoRef  # noqa: E402
from tests.support.deadnet import UNRESOLVABLE_URL, BlackHole, refused_url  # noqa: E402
from tests.support.mirror import start_mirror  # noqa: E402
from tests.support.repos import MiB, make_repo, make_store_repo  # noqa: E402

REPO = "Org/Bench"
PY = sys.executable
STATES = ("dns", "refused", "backlog", "silent")


def stock(local_files_only: bool = False) -> list[str]:
    arg = ", local_files_only=True" if local_files_only else ""
    return [PY, "-c", f"import sys, huggingface_hub as h; print(h.snapshot_download(sys.argv[1]{arg}))", REPO]


def qwenhome(*args: str) -> list[str]:
    return [PY, "-m", "qwenhome", *args]


def env_for(home: Path, hf_cache: Path, endpoint: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL") if k in os.environ}
    env.update({"QWEN_HOME": str(home), "HOME": str(home.parent), "HF_HUB_CACHE": str(hf_cache),
                "HF_ENDPOINT": endpoint, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_DISABLE_TELEMETRY": "1",
                "NO_PROXY": "*"})
    env.update(extra or {})
    return env


@dataclass
class Call:
    wall_s: float
    cpu_s: float
    ok: bool  # exit 0 and an existing folder on the last line of stdout
    outcome: str
    started: float = 0.0  # unix time: the order the calls went in


@dataclass
class Pair:
    """One row: a qwenhome command and the stock call it is compared with."""

    group: str
    state: str
    qwenhome: str  # as the table shows them
    stock: str
    qh_argv: list[str]
    stock_argv: list[str]
    env: dict[str, str]
    prints_folder: bool = True
    qh_runs: list[Call] = field(default_factory=list)
    stock_runs: list[Call] = field(default_factory=list)

    def run(self, side: str, cap: float, logs: Path) -> None:
        argv, runs = (self.qh_argv, self.qh_runs) if side == "qwenhome" else (self.stock_argv, self.stock_runs)
        runs.append(timed(argv, self.env, cap, logs, self.prints_folder))

    def row(self) -> dict[str, Any]:
        qh, st = _med(self.qh_runs), _med(self.stock_runs)
        return {"group": self.group, "state": self.state, "qwenhome": self.qwenhome, "stock": self.stock,
                "qh_wall_s": qh[0], "qh_cpu_s": qh[1], "qh_ok": all(c.ok for c in self.qh_runs),
                "stock_wall_s": st[0], "stock_cpu_s": st[1], "stock_ok": all(c.ok for c in self.stock_runs),
                "stock_outcome": next((c.outcome for c in self.stock_runs if not c.ok), "ok"),
                "stock_over_qh": round(st[0] / qh[0], 1) if qh[0] else None}


def measure(pairs: Sequence[Pair], repeat: int, cap: float, logs: Path,
            before_qwenhome: Callable[[], None] | None = None) -> None:
    """Every pair ``repeat`` times: qwenhome's commands first on even repetitions,
    stock's first on odd ones (each side runs its commands in the pairs' order)."""
    for i in range(repeat):
        for side in (("qwenhome", "stock") if i % 2 == 0 else ("stock", "qwenhome")):
            if side == "qwenhome" and before_qwenhome is not None:
                before_qwenhome()
            for pair in pairs:
                pair.run(side, cap, logs)


def _med(calls: Sequence[Call]) -> tuple[float, float]:
    return (round(statistics.median(c.wall_s for c in calls), 3),
            round(statistics.median(c.cpu_s for c in calls), 3))


def timed(cmd: list[str], env: dict[str, str], cap: float, logs: Path, prints_folder: bool = True) -> Call:
    """One fresh process; ok if it exits 0 (and, ``prints_folder``, with an existing folder last on stdout)."""
    started = round(time.time(), 3)
    m = run_measured(cmd, env=env, timeout=cap, log_dir=logs)
    if m.timed_out:
        return Call(round(m.wall_s, 3), round(m.cpu_s, 3), False, f"killed after {cap:g} s", started)
    last = (m.stdout.strip().splitlines() or [""])[-1]
    ok = m.returncode == 0 and (not prints_folder or Path(last).is_dir())
    outcome = "ok" if ok else f"exit {m.returncode}: " + (m.stderr.strip().splitlines() or [""])[-1][:100]
    return Call(round(m.wall_s, 3), round(m.cpu_s, 3), ok, outcome, started)


def broken(state: str) -> tuple[str, BlackHole | None]:
    if state == "dns":
        return UNRESOLVABLE_URL, None
    if state == "refused":
        return refused_url(), None
    hole = BlackHole(accept=state == "silent").start()
    return hole.url, hole


def extra_disk(home: Path) -> int:
    """Bytes of blocks held only by the home: files whose inode no other path shares."""
    total = 0
    for dirpath, _dirs, files in os.walk(home):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_nlink == 1:
                total += st.st_blocks * 512
    return total


def bench_adopt(tmp: Path, gb: float, repeat: int, cap: float) -> dict[str, Any]:
    size = int(gb * 1000 * 1000 * 1000)
    repo = make_repo(tmp / "adopt-src", "Org/OneGB", {"model.safetensors": size, "config.json": b"{}\n",
                                                      "tokenizer.json": 2_000_000}, seed=4)
    cache = tmp / "other-cache"
    make_store_repo(cache, repo, commit="e" * 40)
    for f in repo.path.rglob("*"):  # the other cache is now the only copy
        if f.is_file():
            f.unlink()
    runs: dict[str, list[Call]] = {"verify": [], "no-verify": []}
    extra: list[int] = []
    for i in range(repeat):
        for mode in (("verify", "no-verify") if i % 2 == 0 else ("no-verify", "verify")):
            home = tmp / f"adopt-{mode}-{i}" / "home"
            env = env_for(home, tmp / "unused-hf-cache", "http://127.0.0.1:9")  # any request would fail
            flags = ["--no-verify"] if mode == "no-verify" else []
            call = timed(qwenhome("adopt", str(cache), *flags), env, cap, home.parent / "logs", prints_folder=False)
            if not call.ok:
                raise SystemExit(f"qwenhome adopt failed: {call.outcome}")
            runs[mode].append(call)
            if mode == "verify":
                extra.append(extra_disk(home))
                blob = home / "hub/models--Org--OneGB/blobs" / repo.files["model.safetensors"].etag
                theirs = cache / "models--Org--OneGB/blobs" / repo.files["model.safetensors"].etag
                if blob.stat().st_ino != theirs.stat().st_ino:
                    raise SystemExit("adopt copied the blob instead of linking it")
    return {"bytes": repo.total_size, "extra_disk_bytes": max(extra),
            "verify": {"wall_s": _med(runs["verify"])[0], "cpu_s": _med(runs["verify"])[1]},
            "no_verify": {"wall_s": _med(runs["no-verify"])[0], "cpu_s": _med(runs["no-verify"])[1]},
            "runs": {k: [asdict(c) for c in v] for k, v in runs.items()}}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cap", type=float, default=60.0, help="kill a run after this many seconds")
    ap.add_argument("--states", default=",".join(STATES))
    ap.add_argument("--adopt-gb", type=float, default=1.0, help="size of the adopt benchmark (0 skips it)")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)
    doc = result_header("offline", argv)
    with tempfile.TemporaryDirectory(prefix="qh-bench-offline-") as tmp_s:
        tmp = Path(tmp_s)
        make_repo(tmp / "repos", REPO, {"model.safetensors": 20 * MiB, "config.json": b'{"model_type": "qwen2"}\n',
                                        "tokenizer.json": 300_000}, seed=9)
        home, hf_cache = tmp / "home", tmp / "hf-cache"
        with start_mirror(FolderBackend(tmp / "repos")) as m:
            pull(load_settings({"HOME": str(tmp)}, home=str(home), sources=[m.url]), RepoRef.parse(REPO))
            subprocess.run(stock(), env=env_for(home, hf_cache, m.url), check=True, capture_output=True)
        netstate = home / "qwenhome" / "netstate.json"
        logs = tmp / "logs"

        env = env_for(home, hf_cache, UNRESOLVABLE_URL)
        startup = Pair("python start-up", "-", "import qwenhome.cli", "import huggingface_hub",
                       [PY, "-c", "import qwenhome.cli"], [PY, "-c", "import huggingface_hub"], env, False)
        measure([startup], args.repeat, args.cap, logs)
        offline_env = env_for(home, hf_cache, UNRESOLVABLE_URL, {"HF_HUB_OFFLINE": "1"})
        pairs = [Pair("no network, by the API", "-", "qwenhome path REPO",
                      "snapshot_download(REPO, local_files_only=True)",
                      qwenhome("path", REPO), stock(local_files_only=True), env),
                 Pair("no network, HF_HUB_OFFLINE=1", "-", "qwenhome pull REPO", "snapshot_download(REPO)",
                      qwenhome("pull", REPO), stock(), offline_env)]
        measure(pairs, args.repeat, args.cap, logs)
        for state in args.states.split(","):
            url, hole = broken(state)
            env = env_for(home, hf_cache, url)
            both = [Pair("default call, network broken", state, f"qwenhome pull REPO ({nth} call)",
                         f"snapshot_download(REPO) ({nth} call)", qwenhome("pull", REPO), stock(), env)
                    for nth in ("first", "second")]
            try:
                # the first call probes: forget the verdict of the repetition before
                measure(both, args.repeat, args.cap, logs, lambda: netstate.unlink(missing_ok=True))
            finally:
                if hole is not None:
                    hole.stop()
            pairs += both
            print(f"state {state} done (load average {os.getloadavg()[0]:.1f})", flush=True)

        rows = [p.row() for p in pairs]
        doc["startup"] = startup.row()
        doc["rows"] = rows
        doc["runs"] = [{"qwenhome": [asdict(c) for c in p.qh_runs], "stock": [asdict(c) for c in p.stock_runs]}
                       for p in [startup, *pairs]]
        print_rows(doc, args.repeat)
        if args.adopt_gb > 0:
            doc["adopt"] = adopt = bench_adopt(tmp, args.adopt_gb, args.repeat, args.cap)
            print(f"\nadopt a {adopt['bytes'] / 1e9:.2f} GB hub cache (medians of {args.repeat}): "
                  f"{adopt['verify']['wall_s']:.2f} s wall, {adopt['verify']['cpu_s']:.2f} s CPU with every byte's "
                  f"sha256 checked; {adopt['no_verify']['wall_s']:.2f} s with --no-verify; extra disk "
                  f"{adopt['extra_disk_bytes']} bytes (blobs hard-linked); network: none (endpoint unreachable)")
    out = write_result(doc, args.json_out)
    print(f"\nwrote {out}")
    return 0


def print_rows(doc: dict[str, Any], repeat: int) -> None:
    s = doc["startup"]
    print(f"\npython start-up (medians of {repeat}): import huggingface_hub {s['stock_wall_s']:.2f} s, "
          f"import qwenhome.cli {s['qh_wall_s']:.2f} s")
    print(f"medians of {repeat}, sides alternating; wall s / CPU s; ! = not every run returned the snapshot")
    print(f"{'state':<8} {'qwenhome':<34}{'wall':>6}{'CPU':>6}  {'stock huggingface_hub':<46}{'wall':>7}{'CPU':>6}"
          f"{'stock÷qh':>9}")
    group = ""
    for r in doc["rows"]:
        if r["group"] != group:
            group = r["group"]
            print(f"-- {group}")
        mark_q, mark_s = ("" if r["qh_ok"] else "!"), ("" if r["stock_ok"] else "!")
        print(f"{r['state']:<8} {r['qwenhome']:<34}{r['qh_wall_s']:>6.2f}{r['qh_cpu_s']:>6.2f}{mark_q:1} "
              f"{r['stock']:<46}{r['stock_wall_s']:>7.2f}{r['stock_cpu_s']:>6.2f}{mark_s:1}"
              f"{r['stock_over_qh']:>8}x")
        if not r["stock_ok"]:
            print(f"{'':<9}stock: {r['stock_outcome']}")


if __name__ == "__main__":
    sys.exit(main())
