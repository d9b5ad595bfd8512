"""The transfer benchmark against a Python Hub endpoint built the common way
(FastAPI, starlette's FileResponse, uvicorn), which lists file names only
and has no tree listing: every tool's files come out sha256-verified. Tiny
sizes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.bench import bench_against

ROOT = Path(__file__).resolve().parents[1]
SIZES = ["--size-mb", "4", "--many-files", "6", "--many-max-kb", "200", "--many-big-mb", "12"]


def test_bench_runs_against_a_fastapi_endpoint_that_lists_names_only(tmp_path: Path) -> None:
    repos = tmp_path / "repos"
    subprocess.run([sys.executable, str(ROOT / "bench/transfer.py"), "--generate-only", str(repos), *SIZES],
                   check=True, capture_output=True, timeout=120)
    doc = bench_against(["asgi_endpoint.py", "--root", str(repos), "--port", "0", "--names-only"], tmp_path,
                        lambda started: ["--shape", *SIZES, "--scenario", "many-files",
                                         "--tools", "qwenhome,hf_transfer"])
    results = doc["scenarios"]["many-files"]["results"]
    # "ok": the run exited 0 and left every file with the expected sha256 (the
    # 12 MB files are LFS files here: qwenhome learns their sha256 from a HEAD).
    # (Stock huggingface_hub 2.x cannot pull from such a server: its
    # snapshot_download needs the tree listing.)
    assert {r["tool"]: r["status"] for r in results} == {"qwenhome": "ok", "hf_transfer": "ok"}
