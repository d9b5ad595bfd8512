"""A CONNECT proxy on 127.0.0.1 that pins host names to local ports: a client
told ``HTTPS_PROXY=<proxy>`` reaches ``https://huggingface.co`` at a local
TLS front (whose test CA the client trusts), so tests can see what a client
sends to a public origin while no packet leaves the machine. A CONNECT to a
name that is not pinned is refused (403)."""

from __future__ import annotations

import contextlib
import socket
import threading


def _pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)


class PinnedProxy:
    def __init__(self, pins: dict[str, int]) -> None:
        self.pins = dict(pins)  # "host:port" -> local port
        self.tunnels: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True, name="pinned-proxy").start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._listener.accept()
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
            first = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            port = self.pins.get(first[1].lower()) if len(first) == 3 and first[0] == "CONNECT" else None
            if port is None:
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            self.tunnels.append(first[1])
            with socket.create_connection(("127.0.0.1", port), timeout=5) as up:
                up.settimeout(None)
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                t = threading.Thread(target=_pipe, args=(up, conn), daemon=True)
                t.start()
                _pipe(conn, up)
                t.join(5)

    def close(self) -> None:
        self._stopped = True
        self._listener.close()

    def __enter__(self) -> PinnedProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
