"""hf_xet (the reference client, Rust) as an oracle for the Xet format.

hf_xet always runs in a subprocess with a throw-away HOME and HF_HOME (it
writes logs and caches there), never in the test process.

- :func:`hf_xet_hashes`: ``hf_xet.hash_files`` on local files;
- :class:`OracleCas`: a minimal CAS on 127.0.0.1 that keeps the xorbs and
  shards hf_xet uploads, and serves files built by ``qwenhome.xet.builder``
  (reconstructions v1/v2 from ``qwenhome.xet.serving``, xorb byte ranges,
  single or ``multipart/byteranges``) for hf_xet to download;
- :func:`run_hf_xet`: upload or download with hf_xet against it.

It checks no token and signs no URL: it proves formats, not the protocol's
security (that is the test Hub server's and the mirror's job).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from qwenhome.xet.recipe import FileRecipe
from qwenhome.xet.reconstruction import ByteRange
from qwenhome.xet.serving import RangeNotSatisfiable, reconstruction_v1, reconstruction_v2
from qwenhome.xet.xorb import Xorb, XorbInfo
from tests.support.cli import clean_env

_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


@dataclass
class OracleState:
    uploaded_xorbs: dict[str, bytes] = field(default_factory=dict)
    shards: list[bytes] = field(default_factory=list)
    xorbs: dict[str, tuple[XorbInfo, bytes]] = field(default_factory=dict)
    recipes: dict[str, FileRecipe] = field(default_factory=dict)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, Range
    xorb_bytes_sent: int = 0
    v2: bool = True  # answer /v2/reconstructions (else 404, so clients fall back to v1)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_xorb(self, xorb: Xorb) -> None:
        self.xorbs[xorb.info.hex] = (xorb.info, xorb.data)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"", ctype: str = "application/json",
               headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, val in (headers or {}).items():
            self.send_header(k, val)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                out += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return bytes(out)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _log(self) -> None:
        with self.server.state.lock:
            self.server.state.requests.append((self.command, self.path, self.headers.get("Range", "")))

    def do_POST(self) -> None:
        self._log()
        body = self._body()
        state = self.server.state
        if m := re.fullmatch(r"/v1/xorbs/default/([0-9a-f]{64})", self.path):
            with state.lock:
                state.uploaded_xorbs[m.group(1)] = body
            self._reply(200, b'{"was_inserted":true}')
        elif self.path == "/v2/shards":
            with state.lock:
                state.shards.append(body)
            self._reply(200, b'{"type":"result","result":1}\n', "application/x-ndjson")
        elif self.path == "/v1/shards":
            with state.lock:
                state.shards.append(body)
            self._reply(200, b'{"result":1}')
        elif self.path == "/v1/telemetry":
            self._reply(200, b"{}")
        else:  # xorb upload grants and anything else: not offered
            self._reply(404, b"{}")

    def do_GET(self) -> None:
        self._log()
        if m := re.fullmatch(r"/v([12])/reconstructions/([0-9a-f]{64})", self.path):
            self._reconstruction(int(m.group(1)), m.group(2))
        elif m := re.fullmatch(r"/xorb/([0-9a-f]{64})", self.path.split("?")[0]):
            self._xorb(m.group(1))
        else:  # global dedup queries and the rest
            self._reply(404, b"{}")

    def _reconstruction(self, version: int, file_id: str) -> None:
        state = self.server.state
        recipe = state.recipes.get(file_id)
        if recipe is None or (version == 2 and not state.v2):
            self._reply(404, b"{}")
            return
        rng = None
        if m := _RANGE.fullmatch(self.headers.get("Range", "")):
            rng = (int(m.group(1)), int(m.group(2)))
        infos = {h: info for h, (info, _) in state.xorbs.items()}

        def url_for(xorb: str, ranges: list[ByteRange]) -> str:
            del ranges
            return f"http://127.0.0.1:{self.server.server_port}/xorb/{xorb}"

        try:
            if version == 2:
                body = reconstruction_v2(recipe, infos, url_for, rng).dumps()
            else:
                body = reconstruction_v1(recipe, infos, url_for, rng).dumps()
        except RangeNotSatisfiable:
            self._reply(416, b"{}")
            return
        self._reply(200, body)

    def _xorb(self, xorb: str) -> None:
        state = self.server.state
        if xorb not in state.xorbs:
            self._reply(404, b"{}")
            return
        data = state.xorbs[xorb][1]
        spec = self.headers.get("Range", "")
        ranges = [(int(a), int(b)) for a, b in re.findall(r"(\d+)-(\d+)", spec)] if spec.startswith("bytes=") else []
        if not ranges or any(b >= len(data) or a > b for a, b in ranges):
            self._reply(416 if ranges else 200, b"" if ranges else data, "application/octet-stream")
            return
        if len(ranges) == 1:
            a, b = ranges[0]
            body = data[a:b + 1]
            headers = {"Content-Range": f"bytes {a}-{b}/{len(data)}"}
            self._reply(206, body, "application/octet-stream", headers)
        else:
            boundary = "oracle-boundary"
            parts = [f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                     f"Content-Range: bytes {a}-{b}/{len(data)}\r\n\r\n".encode() + data[a:b + 1] + b"\r\n"
                     for a, b in ranges]
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
            self._reply(206, body, f"multipart/byteranges; boundary={boundary}")
        with state.lock:
            state.xorb_bytes_sent += sum(b - a + 1 for a, b in ranges)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: OracleState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@contextmanager
def oracle_cas() -> Iterator[tuple[str, OracleState]]:
    """A running OracleCas: yields its URL and its state."""
    state = OracleState()
    server = _Server(state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", state
    finally:
        server.shutdown()
        server.server_close()


_SCRIPT = r"""
import json, sys, time
import hf_xet
job = json.loads(sys.argv[1])
tok = ("oracle-token", int(time.time()) + 3600)
if job["op"] == "hash":
    print(json.dumps([i.hash for i in hf_xet.hash_files(job["paths"])]))
elif job["op"] == "upload":
    out = hf_xet.upload_files(job["paths"], job["endpoint"], tok, None, None, "model")
    print(json.dumps([i.hash for i in out]))
else:
    files = [hf_xet.PyXetDownloadInfo(d, h, n) for h, n, d in job["files"]]
    hf_xet.download_files(files, job["endpoint"], tok, None, None)
    print("[]")
"""


def run_hf_xet(job: dict[str, Any], scratch: Path, timeout: float = 120,
               env: dict[str, str] | None = None) -> list[str]:
    """Run one hf_xet job in a subprocess whose HOME and HF_HOME are under ``scratch``."""
    home = scratch / "hf-xet-home"
    home.mkdir(parents=True, exist_ok=True)
    # Direct xorb uploads (POST /v1/xorbs), not the upload-grant flow this server does not offer.
    child_env = clean_env(home, extra={"HF_HOME": str(home / "hf"), "HF_XET_CLIENT_LEGACY_DIRECT_XORB_UPLOAD": "1",
                                       "HF_XET_TELEMETRY_ENABLED": "0", **(env or {})})
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(job)], env=child_env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"hf_xet {job['op']} failed: {proc.stderr[-2000:]}")
    out: list[str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def hf_xet_hashes(paths: list[Path], scratch: Path) -> list[str]:
    return run_hf_xet({"op": "hash", "paths": [str(p) for p in paths]}, scratch)
