"""Peer clients the transfer benchmark runs as child processes, used the way
their users get them.

    python bench/_clients.py hf_hub      ENDPOINT REPO OUT [REVISION]
    python bench/_clients.py hf_xet      ENDPOINT REPO OUT [REVISION]
    python bench/_clients.py hf_transfer ENDPOINT REPO OUT

* ``hf_hub``: stock ``huggingface_hub.snapshot_download(repo, cache_dir=OUT,
  endpoint=ENDPOINT)`` on its plain HTTP path (the parent sets
  ``HF_HUB_DISABLE_XET=1``): 8 files at a time, one stream per file.
  Prints the snapshot folder.
* ``hf_xet``: the same call with ``hf_xet`` on (the parent leaves
  ``HF_HUB_DISABLE_XET`` unset): the Xet path, token, reconstruction, xorbs.
* ``hf_transfer``: ``hf_transfer.download`` per file with the arguments
  huggingface_hub 0.x passed (``max_files=HF_TRANSFER_CONCURRENCY`` = 100,
  ``chunk_size`` = 10 MiB, ``parallel_failures=3``, ``max_retries=5``), 8 files
  at a time as ``snapshot_download`` ran them; current huggingface_hub no
  longer calls it. The file list comes from one API request. Prints OUT.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HF_TRANSFER_CONCURRENCY = 100  # huggingface_hub 0.x constants
DOWNLOAD_CHUNK_SIZE = 10 * 1024 * 1024
SNAPSHOT_WORKERS = 8  # snapshot_download's max_workers default


def run_hf_hub(endpoint: str, repo_id: str, out: Path, revision: str | None = None) -> str:
    from huggingface_hub import snapshot_download

    return str(snapshot_download(repo_id, cache_dir=out, endpoint=endpoint, revision=revision))


def list_files(endpoint: str, repo_id: str) -> list[str]:
    with urllib.request.urlopen(f"{endpoint}/api/models/{repo_id}/revision/main", timeout=30) as resp:
        info = json.loads(resp.read())
    return [s["rfilename"] for s in info["siblings"]]


def run_hf_transfer(endpoint: str, repo_id: str, out: Path, revision: str | None = None) -> str:
    import hf_transfer

    def one(rel: str) -> None:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        hf_transfer.download(
            url=f"{endpoint}/{repo_id}/resolve/main/{rel}", filename=str(target),
            max_files=HF_TRANSFER_CONCURRENCY, chunk_size=DOWNLOAD_CHUNK_SIZE,
            parallel_failures=3, max_retries=5,
        )

    with ThreadPoolExecutor(SNAPSHOT_WORKERS) as pool:
        list(pool.map(one, list_files(endpoint, repo_id)))
    return str(out)


def main(argv: list[str]) -> int:
    tool, endpoint, repo_id, out, *rev = argv
    runners = {"hf_hub": run_hf_hub, "hf_xet": run_hf_hub, "hf_transfer": run_hf_transfer}
    print(runners[tool](endpoint.rstrip("/"), repo_id, Path(out), *rev), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
