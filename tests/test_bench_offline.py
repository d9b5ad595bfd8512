"""bench/offline.py at a tiny size: every qwenhome command beside the stock
huggingface_hub call that does the same, both sides repeated in alternating
order, each returning the cached snapshot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_offline_bench_compares_like_with_like_in_alternating_order(tmp_path: Path) -> None:
    out = tmp_path / "offline.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "offline.py"), "--repeat", "2", "--states", "dns",
         "--adopt-gb", "0.01", "--cap", "60", "--json-out", str(out)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert [(r["group"], r["stock"]) for r in doc["rows"]] == [
        ("no network, by the API", "snapshot_download(REPO, local_files_only=True)"),
        ("no network, HF_HUB_OFFLINE=1", "snapshot_download(REPO)"),
        ("default call, network broken", "snapshot_download(REPO) (first call)"),
        ("default call, network broken", "snapshot_download(REPO) (second call)"),
    ]
    for row in doc["rows"]:
        # ok: exit 0 and the snapshot's folder printed, on both sides
        assert row["qh_ok"] and row["stock_ok"], row
    for runs in doc["runs"]:
        qh, stock = runs["qwenhome"], runs["stock"]
        assert len(qh) == len(stock) == 2
        assert qh[0]["started"] < stock[0]["started"] and stock[1]["started"] < qh[1]["started"]
    assert doc["adopt"]["extra_disk_bytes"] < 1_000_000  # linked, not copied
    assert doc["loadavg_before"] and doc["loadavg_after"] and doc["source"]["commit"]
