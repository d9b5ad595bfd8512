"""A tiny Hub-like HTTP(S) server on 127.0.0.1 whose answers tests choose.

Modes: ``hub`` (revision API + resolve, optionally redirecting downloads to
``redirect_to``), ``modelscope`` (its files API), ``html`` (a captive portal),
``portal`` (a redirect to a login page), ``no-commit`` (downloads without
``X-Repo-Commit``), ``status`` (every request answers ``status``). ``date_offset`` moves the Date
header; ``tls`` (a trustme CA) serves HTTPS with a certificate it issued.
"""

from __future__ import annotations

import email.utils
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trustme

REPO = "Org/Model"
SHA = "a" * 40


class FakeHub:
    def __init__(self, mode: str = "hub", *, status: int = 200, date_offset: float = 0.0,
                 redirect_to: str | None = None, file_size: int = 1000,
                 tls: trustme.CA | None = None, cert_names: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.mode = mode
        self.status = status
        self.date_offset = date_offset
        self.redirect_to = redirect_to
        self.file_size = file_size
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def date_time_string(self, timestamp: float | None = None) -> str:
                return email.utils.formatdate(time.time() + hub.date_offset, usegmt=True)

            def do_GET(self) -> None:
                hub._handle(self, "GET")

            def do_HEAD(self) -> None:
                hub._handle(self, "HEAD")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            cert = tls.issue_cert(*cert_names)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            cert.configure_cert(ctx)
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
            self.scheme = "https"
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def _send(self, h: BaseHTTPRequestHandler, method: str, status: int, body: bytes, ctype: str,
              extra: dict[str, str] | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(body)

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        self.requests.append((method, h.path, dict(h.headers.items())))
        path = h.path.split("?")[0]
        if self.mode == "html":
            body = b"<html><head><title>Hotel WiFi Login</title></head><body>Please log in</body></html>"
            return self._send(h, method, 200, body, "text/html; charset=utf-8")
        if self.mode == "portal":
            return self._send(h, method, 302, b"", "text/html", {"Location": "http://login.portal.test/?next=/"})
        if self.mode == "no-commit" and "/resolve/" in path:
            return self._send(h, method, 200, b"", "application/octet-stream")
        if self.mode == "status":
            return self._send(h, method, self.status, b'{"error": "boom"}', "application/json")
        if self.mode in ("hub", "no-commit") and path.startswith("/api/models/"):
            doc: dict[str, Any] = {"id": REPO, "sha": SHA, "siblings": [
                {"rfilename": "config.json", "size": 10, "blobId": "b" * 40},
                {"rfilename": "model.safetensors", "size": self.file_size,
                 "lfs": {"sha256": "c" * 64, "size": self.file_size}},
            ]}
            return self._send(h, method, 200, json.dumps(doc).encode(), "application/json")
        if self.mode == "modelscope" and path.startswith("/api/v1/models/"):
            if path.endswith("/repo/files"):
                ms_doc: dict[str, Any] = {"Code": 200, "Success": True, "Data": {"Files": [
                    {"Name": "model.safetensors", "Path": "model.safetensors", "Type": "blob",
                     "Size": self.file_size, "Sha256": "d" * 64},
                ]}}
                return self._send(h, method, 200, json.dumps(ms_doc).encode(), "application/json")
            return self._send(h, method, 206, b"x", "application/octet-stream")
        if "/resolve/" in path:
            if self.redirect_to:
                return self._send(h, method, 302, b"", "text/plain", {"Location": self.redirect_to,
                                                                        "X-Repo-Commit": SHA})
            return self._send(h, method, 200, b"", "application/octet-stream",
                              {"X-Repo-Commit": SHA, "ETag": '"' + "c" * 64 + '"'})
        return self._send(h, method, 200, b"ok", "text/plain")

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
