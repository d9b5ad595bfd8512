"""A mirror that speaks Xet, stock clients against it, and the Xet routes by hand.

- :func:`start_xet_mirror`: a :class:`~tests.support.mirror.Mirror` with Xet on,
  its records in a temp folder, every blob chunked before it returns;
- :func:`hf_download`: stock ``huggingface_hub`` (with ``hf_xet`` unless told
  otherwise) in a subprocess whose HOME and HF_HOME are throw-away folders;
- :func:`token_for`, :func:`reconstruction`: the token route and the CAS over HTTP.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from qwenhome.mirror import Backend, MirrorServer, XetOptions
from qwenhome.xet import XetToken
from tests.support.cli import clean_env
from tests.support.faults import Faults
from tests.support.http import Response, request
from tests.support.mirror import Mirror


def start_xet_mirror(backend: Backend, folder: Path, *, token: str | None = None, faults: Faults | None = None,
                     wait: float = 120.0, **options: Any) -> Mirror:
    """A mirror over ``backend`` with Xet on (records in ``folder``); returns once every blob is chunked
    (unless ``build_at_start=False``)."""
    faults = faults or Faults()
    xet = XetOptions(folder=folder, **options)
    server = MirrorServer(backend, token=token, hooks=faults, xet=xet).start()
    assert server.xet is not None
    if xet.build_at_start and not server.xet.wait_idle(wait):
        server.stop()
        raise AssertionError("the mirror did not finish chunking its blobs in time")
    return Mirror(server, faults)


def refuse_bridge(faults: Faults) -> None:
    """The resolve bridge refuses every weights body (403; HEAD still
    answers), as the Hub does for very large files: Xet alone serves them."""
    faults.fail(403, times=None, predicate=lambda info: info.route_kind == "resolve" and info.method == "GET"
                and info.file_path.endswith((".safetensors", ".bin")))


def random_bytes(size: int, seed: int) -> bytes:
    """Incompressible bytes without repeats (generated repos repeat 1 MiB blocks, which Xet deduplicates)."""
    return random.Random(seed).randbytes(size)


_SCRIPT = r"""
import json, sys
import huggingface_hub as h
job = json.loads(sys.argv[1])
kw = dict(revision=job["revision"], repo_type=job["repo_type"], token=job["token"] or False)
if job["files"]:
    print(json.dumps([h.hf_hub_download(job["repo"], f, **kw) for f in job["files"]]))
else:
    print(json.dumps([h.snapshot_download(job["repo"], **kw)]))
"""


def hf_download(endpoint: str, repo_id: str, scratch: Path, *, revision: str | None = None,
                files: list[str] | None = None, token: str | None = None, repo_type: str = "model",
                xet: bool = True, env: dict[str, str] | None = None, timeout: float = 180) -> list[Path]:
    """Stock huggingface_hub (+ hf_xet when ``xet``) downloads from ``endpoint`` in a subprocess;
    returns the snapshot folder, or the files' paths when ``files`` are given."""
    home = scratch / "hf-client"
    home.mkdir(parents=True, exist_ok=True)
    extra = {"HF_HOME": str(home / "hf"), "HF_HUB_CACHE": str(home / "hub"), "HF_XET_TELEMETRY_ENABLED": "0",
             "HF_HUB_DISABLE_PROGRESS_BARS": "1", **({} if xet else {"HF_HUB_DISABLE_XET": "1"}), **(env or {})}
    job = {"repo": repo_id, "revision": revision, "files": files or [], "token": token, "repo_type": repo_type}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(job)], env=clean_env(home, endpoint, extra),
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"huggingface_hub failed: {proc.stderr[-3000:]}")
    return [Path(p) for p in json.loads(proc.stdout.strip().splitlines()[-1])]


def token_for(url: str, repo_id: str, revision: str, *, token: str | None = None,
              repo_type: str = "model") -> XetToken:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = request(url, path=f"/api/{repo_type}s/{repo_id}/xet-read-token/{revision}", headers=headers)
    assert resp.status == 200, (resp.status, resp.body)
    return XetToken.from_json(resp.body)


def reconstruction(token: XetToken, file_id: str, *, version: int = 2, file_range: str | None = None,
                   authorization: str | None = None) -> Response:
    """``GET {casUrl}/v{version}/reconstructions/{file_id}`` with the token (or ``authorization`` as given)."""
    headers = {"Authorization": authorization if authorization is not None else f"Bearer {token.access_token}"}
    if file_range:
        headers["Range"] = file_range
    return request(token.cas_url, path=f"/v{version}/reconstructions/{file_id}", headers=headers)


def get_url(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Response:
    """One request to an absolute URL (a signed xorb URL, as given)."""
    parts = urlsplit(url)
    return request(f"{parts.scheme}://{parts.netloc}", method, f"{parts.path}?{parts.query}", headers)
