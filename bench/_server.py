"""The transfer benchmark's server: the project's Hub-protocol mirror over plain
repository folders, with the scenario's network shaped by the test kit's Faults.

    python bench/_server.py --root DIR [--bandwidth BYTES_PER_S] [--latency SECONDS]
    python bench/_server.py --store HUB_CACHE --xet RECORDS [...]   # Xet on (bench/xet.py)

Runs in its own process so its CPU is not billed to the tool being measured
and its GIL is not shared with in-process clients. Hashes every repository
before it answers. Prints ``{"url": ...}`` as its first line, then answers
one JSON line per command read from stdin:

* ``mark``  - start a measuring window (the benchmark sends it before each run);
* ``stats`` - requests since the mark: body bytes sent per file and per
  kind of route (``resolve``, ``reconstruction``, ``xorb``...), requests,
  TCP connections, statuses, the server's CPU seconds;
* ``quit``  - stop.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from qwenhome.mirror import (  # noqa: E402
    Backend,
    FolderBackend,
    HashCache,
    MirrorServer,
    StoreBackend,
    XetOptions,
    warm,
)
from tests.support.faults import Faults, kind  # noqa: E402
from tests.support.xet_mirror import refuse_bridge  # noqa: E402


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def stats_since(faults: Faults, since: float, cpu0: float) -> dict[str, Any]:
    records = [r for r in faults.records(settle=5.0) if r.started >= since]
    per_file: Counter[str] = Counter()
    per_kind: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for r in records:
        if r.file_path and r.method == "GET":
            per_file[r.file_path] += r.bytes_sent
        per_kind[r.route_kind or "other"] += r.bytes_sent
        statuses[str(r.status)] += 1
    return {
        "requests": len(records),
        "file_requests": sum(1 for r in records if r.file_path and r.method == "GET"),
        "connections": len({r.connection_id for r in records}),
        "bytes_sent": sum(per_file.values()),
        "bytes_per_file": dict(per_file),
        "bytes_per_kind": dict(per_kind),
        "statuses": dict(statuses),
        "cpu_s": round(_cpu() - cpu0, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=None, help="folder holding Org/Name/ repositories")
    ap.add_argument("--store", type=Path, default=None, help="a hub cache to serve instead (every revision)")
    ap.add_argument("--xet", type=Path, default=None,
                    help="speak Xet, with the records in this folder (kept across runs); waits until chunked")
    ap.add_argument("--bandwidth", type=float, default=None, help="bytes/s per TCP connection")
    ap.add_argument("--latency", type=float, default=None, help="seconds before each response")
    ap.add_argument("--bandwidth-on", default=None,
                    help="pace only this route kind (xorb, resolve, ...): one host capped, the others not")
    ap.add_argument("--refuse-bridge", action="store_true",
                    help="answer every GET of a weights file's bytes on the resolve route with a 403, as the "
                         "Hub does for very large files (HEADs still answer): Xet alone serves them")
    ap.add_argument("--xet-compression", choices=("none", "lz4", "auto"), default="none",
                    help="how the xorbs are stored: as served (none), LZ4, or per chunk the smaller of LZ4 "
                         "and BG4-LZ4 where it is smaller (auto, as the Hub's are)")
    ap.add_argument("--split-hosts", action="store_true",
                    help="reconstructions and xorb bytes each on a port of their own, as the Hub's CAS and "
                         "its xorb host are separate hosts")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--hashes", type=Path, default=None, help="hash cache file kept across runs")
    ap.add_argument("--redirect-lfs", action="store_true",
                    help="answer resolve for LFS files with a 302 to a signed /cdn/ URL, as the Hub does")
    args = ap.parse_args()

    faults = Faults()
    if args.bandwidth:
        faults.bandwidth(args.bandwidth, predicate=kind(args.bandwidth_on) if args.bandwidth_on else None)
    if args.latency:
        faults.latency(args.latency, times=None)
    if args.refuse_bridge:
        refuse_bridge(faults)
    hashes = HashCache(args.hashes) if args.hashes else HashCache()
    backend: Backend
    if args.store is not None:
        backend = StoreBackend(args.store)
    else:
        if args.root is None:
            ap.error("--root or --store is needed")
        backend = FolderBackend(args.root, hashes=hashes, ttl=3600)  # the files never change
        warm(backend)
        hashes.save()
    own_port = 0 if args.split_hosts else None
    xet = (XetOptions(folder=args.xet, compression=args.xet_compression, cas_port=own_port, xorb_port=own_port)
           if args.xet is not None else None)
    server = MirrorServer(backend, port=args.port, hooks=faults, redirect_lfs=args.redirect_lfs,
                          cdn_host="127.0.0.1", xet=xet).start()
    if server.xet is not None and not server.xet.wait_idle(3600):
        raise SystemExit("the mirror did not finish chunking its blobs")
    print(json.dumps({"url": server.url}), flush=True)
    since, cpu0 = time.monotonic(), _cpu()
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "mark":
                since, cpu0 = time.monotonic(), _cpu()
                print(json.dumps({"ok": True}), flush=True)
            elif command == "stats":
                print(json.dumps(stats_since(faults, since, cpu0)), flush=True)
            elif command == "quit":
                print(json.dumps({"ok": True}), flush=True)
                break
            else:
                print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)
    finally:
        faults.release()
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
