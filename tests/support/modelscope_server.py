"""A ModelScope-protocol test server over the same plain repository folders
the Hub-protocol mirror serves (``ROOT/Org/Name``), with a request log and a
few count-based faults.

    with ModelScopeServer(repos_root, hashes=hash_cache) as ms:
        pull(settings with --source modelscope:{ms.url}, ...)
        assert ms.bytes_sent("model.safetensors") == size

Endpoints (as modelscope_hub uses them):
- ``GET /api/v1/models/{owner}/{name}/repo/files?Revision=&Recursive=&Root=``
  → ``{"Code": 200, "Data": {"Files": [...]}, "Success": true}``, cut off at
  ``listing_limit`` entries like the real server;
- ``GET /api/v1/models/{owner}/{name}/repo?Revision=&FilePath=`` with one
  ``Range``.
Only the revision ``master`` exists; anything else answers like ModelScope
does for an unknown revision (HTTP 200, ``Code`` != 200).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from qwenhome.mirror import HashCache, parse_range
from qwenhome.mirror.protocol import Unsatisfiable

REVISION = "master"
_CHUNK = 64 * 1024


@dataclass
class MsRecord:
    method: str
    path: str
    query: dict[str, str]
    file_path: str
    range: str | None
    status: int
    bytes_sent: int
    has_auth_header: bool


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: ModelScopeServer) -> None:
        self.owner = owner
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away is normal here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.conns_lock:
            self.server.conns.add(self.connection)

    def finish(self) -> None:
        with self.server.conns_lock:
            self.server.conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.owner._handle(self)


class ModelScopeServer:
    """Serve ``root/Org/Name`` folders over the ModelScope protocol on 127.0.0.1."""

    def __init__(self, root: Path, *, hashes: HashCache | None = None, listing_limit: int = 3000,
                 token: str | None = None) -> None:
        self.root = Path(root)
        self.hashes = hashes or HashCache()
        self.listing_limit = listing_limit
        self.token = token
        self.log: list[MsRecord] = []
        self._lock = threading.Lock()
        self._busy = 0  # requests being answered: logged when they end
        self._corrupt: dict[str, int] = {}  # file path -> offset flipped in every body
        self._fail: list[int] = []  # statuses to answer, one per request
        self._httpd = _Server(self)
        self.port = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- faults ----------------------------------------------------------------
    def corrupt(self, file_path: str, offset: int) -> None:
        """Flip the byte at ``offset`` of ``file_path`` in every body that carries it."""
        with self._lock:
            self._corrupt[file_path] = offset

    def fail(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._fail.extend([status] * times)

    # -- log -------------------------------------------------------------------
    def records(self, kind: str | None = None) -> list[MsRecord]:
        """``kind``: ``files`` (listings), ``download`` or None for all.

        A client has its answer a moment before the server logs it: wait (up to
        2 s) for requests still being answered."""
        deadline = time.monotonic() + 2.0
        while True:
            with self._lock:
                if not self._busy or time.monotonic() > deadline:
                    log = list(self.log)
                    break
            time.sleep(0.005)
        if kind == "files":
            return [r for r in log if r.path.endswith("/repo/files")]
        if kind == "download":
            return [r for r in log if r.path.endswith("/repo")]
        return log

    def bytes_sent(self, file_path: str | None = None) -> int:
        return sum(r.bytes_sent for r in self.records("download") if file_path in (None, r.file_path))

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> ModelScopeServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name=f"ms-server-{self.port}")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, drop open connections, release the port."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        with self._httpd.conns_lock:
            conns = list(self._httpd.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()

    def __enter__(self) -> ModelScopeServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- protocol -----------------------------------------------------------------
    def _files(self, repo_dir: Path) -> list[dict[str, Any]]:
        out = []
        for dirpath, dirnames, filenames in os.walk(repo_dir):
            dirnames.sort()
            rel_dir = Path(dirpath).relative_to(repo_dir).as_posix()
            for d in dirnames:
                p = d if rel_dir == "." else f"{rel_dir}/{d}"
                out.append({"Name": d, "Path": p, "Type": "tree", "Size": 0, "Sha256": "", "IsLFS": False,
                            "Revision": REVISION})
            for name in sorted(filenames):
                real = Path(dirpath) / name
                st = real.stat()
                sha = self.hashes.get(real, st, git=False, sha256=True).sha256
                p = name if rel_dir == "." else f"{rel_dir}/{name}"
                out.append({"Name": name, "Path": p, "Type": "blob", "Size": st.st_size, "Sha256": sha,
                            "IsLFS": st.st_size > 10 * 1024 * 1024, "Revision": REVISION})
        return out

    def _handle(self, h: _Handler) -> None:
        parts = urlsplit(h.path)
        path = unquote(parts.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        rec = MsRecord("GET", path, query, query.get("FilePath", ""), h.headers.get("Range"), 0, 0,
                       "Authorization" in h.headers)
        with self._lock:
            self._busy += 1
        try:
            self._dispatch(h, path, query, rec)
        except OSError:
            pass
        finally:
            with self._lock:
                self.log.append(rec)
                self._busy -= 1

    def _json(self, h: _Handler, rec: MsRecord, status: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        rec.status = status
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _dispatch(self, h: _Handler, path: str, query: dict[str, str], rec: MsRecord) -> None:
        with self._lock:
            status = self._fail.pop(0) if self._fail else None
        if status is not None:
            self._json(h, rec, status, {"Code": status, "Message": "injected fault", "Success": False})
            return
        if self.token and h.headers.get("Authorization") != f"Bearer {self.token}":
            self._json(h, rec, 401, {"Code": 401, "Message": "unauthorized", "Success": False})
            return
        segs = path.strip("/").split("/")
        if len(segs) not in (6, 7) or segs[:3] != ["api", "v1", "models"] or segs[5] != "repo":
            self._json(h, rec, 404, {"Code": 404, "Message": "not found", "Success": False})
            return
        repo_dir = self.root / segs[3] / segs[4]
        if ".." in segs or not repo_dir.is_dir():
            self._json(h, rec, 404, {"Code": 10010205001, "Message": "model not exist", "Success": False})
            return
        if query.get("Revision", REVISION) != REVISION:
            self._json(h, rec, 200, {"Code": 10010205002, "Message": "revision not exist", "Success": False})
            return
        if len(segs) == 7 and segs[6] == "files":
            self._listing(h, repo_dir, query, rec)
        elif len(segs) == 6:
            self._download(h, repo_dir, query, rec)
        else:
            self._json(h, rec, 404, {"Code": 404, "Message": "not found", "Success": False})

    def _listing(self, h: _Handler, repo_dir: Path, query: dict[str, str], rec: MsRecord) -> None:
        files = self._files(repo_dir)
        root = query.get("Root", "").strip("/")
        recursive = query.get("Recursive", "False").lower() == "true"
        if root:
            files = [f for f in files if f["Path"].startswith(root + "/")]
        if not recursive:
            depth = root.count("/") + 1 if root else 0
            files = [f for f in files if f["Path"].count("/") == depth]
        self._json(h, rec, 200, {"Code": 200, "Data": {"Files": files[: self.listing_limit]}, "Success": True})

    def _download(self, h: _Handler, repo_dir: Path, query: dict[str, str], rec: MsRecord) -> None:
        rel = query.get("FilePath", "")
        real = (repo_dir / rel).resolve()
        if not rel or ".." in rel.split("/") or not real.is_file() or not real.is_relative_to(repo_dir.resolve()):
            self._json(h, rec, 404, {"Code": 404, "Message": "file not exist", "Success": False})
            return
        size = real.stat().st_size
        try:
            span = parse_range(h.headers.get("Range"), size)
        except Unsatisfiable:
            rec.status = 416
            h.send_response(416)
            h.send_header("Content-Range", f"bytes */{size}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        start, end = (span[0], span[1] + 1) if span is not None else (0, size)
        rec.status = 206 if span is not None else 200
        h.send_response(rec.status)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(end - start))
        h.send_header("Accept-Ranges", "bytes")
        if span is not None:
            h.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        h.end_headers()
        with self._lock:
            flip = self._corrupt.get(rel)
        with open(real, "rb") as fh:
            pos = start
            while pos < end:
                chunk = bytearray(os.pread(fh.fileno(), min(_CHUNK, end - pos), pos))
                if not chunk:
                    break
                if flip is not None and pos <= flip < pos + len(chunk):
                    chunk[flip - pos] ^= 0xFF
                h.wfile.write(chunk)
                pos += len(chunk)
                rec.bytes_sent += len(chunk)
