"""A minimal forward proxy on 127.0.0.1: CONNECT tunnels and absolute-form
requests, with an optional status to refuse CONNECT with."""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit


def _pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)


class ForwardProxy:
    def __init__(self, refuse_status: int | None = None) -> None:
        self.refuse_status = refuse_status
        self.requests: list[str] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(32)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            header, _, rest = head.partition(b"\r\n\r\n")
            first = header.split(b"\r\n", 1)[0].decode("latin-1")
            self.requests.append(first)
            method, target, _ = first.split(" ", 2)
            if method == "CONNECT":
                if self.refuse_status:
                    conn.sendall(f"HTTP/1.1 {self.refuse_status} Forbidden\r\nContent-Length: 0\r\n\r\n".encode())
                    return
                host, _, port = target.rpartition(":")
                upstream = socket.create_connection((host, int(port)), timeout=5)
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                parts = urlsplit(target)
                upstream = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=5)
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                lines = header.split(b"\r\n")
                lines[0] = f"{method} {path} HTTP/1.1".encode()
                upstream.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + rest)
            with upstream:
                t = threading.Thread(target=_pipe, args=(upstream, conn), daemon=True)
                t.start()
                _pipe(conn, upstream)
                t.join(5)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self._listener.close()

    def __enter__(self) -> ForwardProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
