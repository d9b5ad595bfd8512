"""Offline benchmark: how long a cached model takes to come back when the Hub
address is broken, qwenhome versus stock huggingface_hub, measured in one run.

States of the Hub address (all on this machine, nothing leaves it):
  (a) dns      a name that does not resolve (``*.invalid``)
  (b) refused  a 127.0.0.1 port where nothing listens
  (c1) backlog a listening socket that never accepts (kernel handshake only)
  (c2) silent  a socket that accepts and never replies

Measured, each as a fresh process with HF_ENDPOINT pointing at the broken address:
  qwenhome path REPO            (never touches the network)
  qwenhome pull REPO            first call: the bounded probe decides offline
  qwenhome pull REPO (again)    the remembered verdict is used
  stock snapshot_download(REPO) huggingface_hub's usual "get me the model" call,
                                with the model in its own cache (capped, killed at --cap)

Then adoption (``--adopt-gb``): a hub cache holding a model of that size is
adopted with ``qwenhome adopt`` (a fresh process); reported: wall time, bytes
linked/copied, extra disk used by the home (blocks of files not shared by
hard link with the other cache), and that no network was used at all.

    .venv/bin/python bench/offline.py [--repeat 3] [--cap 60] [--adopt-gb 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from qwenhome.config import load_settings  # noqa: E402
from qwenhome.mirror import FolderBackend  # noqa: E402
from qwenhome.pull import pull  # noqa: E402
from qwenhome.store import RepoRef  # noqa: E402
from tests.support.deadnet import UNRESOLVABLE_URL, BlackHole, refused_url  # noqa: E402
from tests.support.mirror import start_mirror  # noqa: E402
from tests.support.repos import MiB, make_repo, make_store_repo  # noqa: E402

REPO = "Org/Bench"


def env_for(home: Path, endpoint: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL") if k in os.environ}
    env.update({"QWEN_HOME": str(home), "HOME": str(home.parent), "HF_ENDPOINT": endpoint,
                "PYTHONPATH": str(ROOT / "src"), "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "*"})
    env.update(extra or {})
    return env


def timed(cmd: list[str], env: dict[str, str], cap: float) -> tuple[float, int | None, str]:
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=cap, check=False)
        return time.monotonic() - t0, p.returncode, (p.stdout + p.stderr).strip().splitlines()[-1:][0][:80] if (
            p.stdout + p.stderr).strip() else ""
    except subprocess.TimeoutExpired:
        return time.monotonic() - t0, None, f"killed after {cap:.0f}s"


def median(runs: list[float]) -> float:
    return statistics.median(runs)


def extra_disk(home: Path) -> int:
    """Bytes of blocks held only by the home: files whose inode no other path shares."""
    total = 0
    for dirpath, _dirs, files in os.walk(home):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_nlink == 1:
                total += st.st_blocks * 512
    return total


def bench_adopt(tmp: Path, gb: float, cap: float) -> None:
    import json

    size = int(gb * 1000 * 1000 * 1000)
    repo = make_repo(tmp / "adopt-src", "Org/OneGB", {"model.safetensors": size, "config.json": b"{}\n",
                                                      "tokenizer.json": 2_000_000}, seed=4)
    cache = tmp / "other-cache"
    make_store_repo(cache, repo, commit="e" * 40)
    for f in (repo.path).rglob("*"):  # the other cache is now the only copy
        if f.is_file():
            f.unlink()
    home = tmp / "adopt-home"
    env = env_for(home, "http://127.0.0.1:9")  # any request would fail loudly
    before = extra_disk(home) if home.exists() else 0
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t, rc, _ = timed([sys.executable, "-m", "qwenhome", "adopt", str(cache), "--json"], env, cap)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    assert rc == 0, "adopt failed"
    out = subprocess.run([sys.executable, "-m", "qwenhome", "path", "Org/OneGB"], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    blob = home / "hub/models--Org--OneGB/blobs" / repo.files["model.safetensors"].etag
    theirs = cache / "models--Org--OneGB/blobs" / repo.files["model.safetensors"].etag
    rep = json.loads(subprocess.run([sys.executable, "-m", "qwenhome", "adopt", str(cache), "--json"], env=env,
                                    capture_output=True, text=True, check=True).stdout)["adopted"][0]
    home2 = tmp / "adopt-home-trusting"
    t2, rc2, _ = timed([sys.executable, "-m", "qwenhome", "adopt", str(cache), "--no-verify"],
                       env_for(home2, "http://127.0.0.1:9"), cap)
    assert rc2 == 0
    print(f"adopt --no-verify (blob names trusted, sizes checked): {t2:.2f}s wall")
    print(f"adopt {repo.total_size / 1e9:.2f} GB hub cache: {t:.2f}s wall, {cpu:.2f}s CPU (process incl. startup "
          f"and the sha256 check of every byte; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores); "
          f"same inode: {blob.stat().st_ino == theirs.stat().st_ino}; "
          f"extra disk: {extra_disk(home) - before} bytes; network: none (endpoint unreachable); "
          f"re-adopt: {rep['present']} present, {rep['linked']} linked; path -> {out}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cap", type=float, default=60.0, help="kill a stock run after this many seconds")
    ap.add_argument("--states", default="a,b,c1,c2")
    ap.add_argument("--adopt-gb", type=float, default=1.0, help="size of the adopt benchmark (0 skips it)")
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="qh-bench-offline-") as tmp_s:
        tmp = Path(tmp_s)
        make_repo(tmp / "repos", REPO, {"model.safetensors": 20 * MiB, "config.json": b'{"model_type": "qwen2"}\n',
                                        "tokenizer.json": 300_000}, seed=9)
        home = tmp / "home"
        hf_cache = tmp / "hf-cache"
        with start_mirror(FolderBackend(tmp / "repos")) as m:
            pull(load_settings({"HOME": str(tmp)}, home=str(home), sources=[m.url]), RepoRef.parse(REPO))
            subprocess.run([py, "-c", f"import huggingface_hub as h; h.snapshot_download({REPO!r})"],
                           env=env_for(home, m.url, {"HF_HUB_CACHE": str(hf_cache)}), check=True,
                           capture_output=True)
        base, _, _ = timed([py, "-c", "import huggingface_hub"], env_for(home, "http://x"), args.cap)
        base_qh, _, _ = timed([py, "-c", "import qwenhome.cli"], env_for(home, "http://x"), args.cap)
        netstate = home / "qwenhome" / "netstate.json"

        rows: list[list[str]] = []
        states: dict[str, Callable[[], tuple[str, BlackHole | None]]] = {
            "a": lambda: (UNRESOLVABLE_URL, None),
            "b": lambda: (refused_url(), None),
            "c1": lambda: ("", BlackHole(accept=False).start()),
            "c2": lambda: ("", BlackHole(accept=True).start()),
        }
        for name in args.states.split(","):
            url, hole = states[name]()
            url = hole.url if hole is not None else url
            env = env_for(home, url)
            try:
                qh_path, qh_pull, qh_again = [], [], []
                for _ in range(args.repeat):
                    netstate.unlink(missing_ok=True)
                    qh_path.append(timed([py, "-m", "qwenhome", "path", REPO], env, args.cap)[0])
                    t, rc, _ = timed([py, "-m", "qwenhome", "pull", REPO], env, args.cap)
                    assert rc == 0, f"qwenhome pull failed in state {name}"
                    qh_pull.append(t)
                    qh_again.append(timed([py, "-m", "qwenhome", "pull", REPO], env, args.cap)[0])
                stock_env = env_for(home, url, {"HF_HUB_CACHE": str(hf_cache)})
                st, rc, last = timed([py, "-c", f"import huggingface_hub as h; print(h.snapshot_download({REPO!r}))"],
                                     stock_env, args.cap)
                stock = f"{st:.2f}" + ("" if rc == 0 else f" ({last})")
                for label, runs in (("qwenhome path", qh_path), ("qwenhome pull (probe)", qh_pull),
                                    ("qwenhome pull (remembered)", qh_again)):
                    rows.append([name, label, f"{median(runs):.2f}", f"{max(runs):.2f}", stock, f"{st / median(runs):.1f}x"])
            finally:
                if hole is not None:
                    hole.stop()
        print(f"python startup: import huggingface_hub {base:.2f}s, import qwenhome.cli {base_qh:.2f}s")
        print(f"{'state':6} {'command':28} {'median s':>9} {'max s':>7}  {'stock snapshot_download s':28} {'stock/qwenhome':>14}")
        for r in rows:
            print(f"{r[0]:6} {r[1]:28} {r[2]:>9} {r[3]:>7}  {r[4]:28} {r[5]:>14}")
        if args.adopt_gb > 0:
            bench_adopt(tmp, args.adopt_gb, args.cap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
