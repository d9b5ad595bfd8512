"""A Hub endpoint the way a self-hosted Python mirror is commonly written:
FastAPI routes, starlette's ``FileResponse`` (ranges in 64 KiB chunks through
a thread pool) and one uvicorn process. A server this project did not write
the HTTP side of, and one whose CPU, not the link, is the limit on 2 cores.

    .venv/bin/python bench/transfer.py --generate-only /dev/shm/bench-repos
    .venv/bin/python bench/asgi_endpoint.py --root /dev/shm/bench-repos --port 18050 &
    .venv/bin/python bench/transfer.py --endpoint http://127.0.0.1:18050 --shape \\
        --scenario one-big-limited --scenario many-files --tools qwenhome,hf_transfer,aria2c --repeat 3

The revision answer lists sizes and hashes (``?blobs=true``), as the Hub
does; with ``--names-only`` it lists file names only and there is no tree
listing, so a client must HEAD each file for its size and hash (as
huggingface_hub does). Prints ``{"url": ...}`` once listening; runs until
interrupted. Needs the ``app`` extra (fastapi, uvicorn).
"""


import argparse
import hashlib
import json
import signal
import socket
import sys
from pathlib import Path
from typing import Any

LFS_MIN = 10_000_000  # files from this size on are served as LFS files (sha256 ETag)
COMMIT = "b" * 40


def _hashes(path: Path) -> tuple[str, str]:
    """(sha256, git blob id) of one file."""
    sha, blob = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            blob.update(chunk)
    return sha.hexdigest(), blob.hexdigest()


def build_app(root: Path, names_only: bool) -> Any:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, Response

    app = FastAPI()
    known: dict[Path, tuple[str, str]] = {}

    def repo_dir(org: str, name: str) -> Path:
        repo = (root / org / name).resolve()
        if root.resolve() not in repo.parents or not repo.is_dir():
            raise HTTPException(404, headers={"X-Error-Code": "RepoNotFound"})
        return repo

    def hashes(path: Path) -> tuple[str, str]:
        if path not in known:
            known[path] = _hashes(path)
        return known[path]

    def entry(repo: Path, path: Path) -> dict[str, Any]:
        doc: dict[str, Any] = {"rfilename": path.relative_to(repo).as_posix()}
        if not names_only:
            sha, blob = hashes(path)
            size = path.stat().st_size
            doc.update(size=size, blobId=blob)
            if size >= LFS_MIN:
                doc["lfs"] = {"sha256": sha, "size": size, "pointerSize": 134}
        return doc

    @app.get("/api/models/{org}/{name}/revision/{rev}")
    def revision(org: str, name: str, rev: str) -> dict[str, Any]:
        repo = repo_dir(org, name)
        files = sorted(p for p in repo.rglob("*") if p.is_file())
        return {"id": f"{org}/{name}", "sha": COMMIT, "private": False,
                "siblings": [entry(repo, p) for p in files]}

    @app.api_route("/{org}/{name}/resolve/{rev}/{rel:path}", methods=["GET", "HEAD"])
    def resolve(org: str, name: str, rev: str, rel: str, request: Request) -> Response:
        repo = repo_dir(org, name)
        path = (repo / rel).resolve()
        if repo not in path.parents or not path.is_file():
            raise HTTPException(404, headers={"X-Error-Code": "EntryNotFound"})
        sha, blob = hashes(path)
        size = path.stat().st_size
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{sha if size >= LFS_MIN else blob}"'}
        if size >= LFS_MIN:
            headers.update({"X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(size)})
        if request.method == "HEAD":
            return Response(headers={**headers, "Content-Length": str(size)})
        return FileResponse(path, headers=headers)

    for p in root.rglob("*"):  # hashed up front: no request waits for a GB of sha256
        if p.is_file():
            hashes(p.resolve())
    return app


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="folder holding Org/Name/ repositories")
    ap.add_argument("--port", type=int, default=18050)
    ap.add_argument("--names-only", action="store_true", help="list file names only; no sizes, hashes or tree")
    args = ap.parse_args()
    try:
        import uvicorn
    except ImportError:
        print("uvicorn not installed (pip install -e '.[app]')", file=sys.stderr)
        return 1
    app = build_app(args.root, args.names_only)
    sock = socket.create_server(("127.0.0.1", args.port))  # listening before the URL is printed
    print(json.dumps({"url": f"http://127.0.0.1:{sock.getsockname()[1]}"}), flush=True)
    # uvicorn stops on SIGTERM and then raises it again for the handler it
    # found: a quiet one makes a stop by signal a clean exit (status 0).
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
