"""A TCP server on 127.0.0.1 that answers every request with the same bytes
and closes: for response heads no well-behaved HTTP server would send."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def canned_server(answer: bytes, drip: float = 0.0) -> Iterator[str]:
    """Its base URL, ``http://127.0.0.1:PORT``, while the block runs. With
    ``drip``, the answer goes a byte at a time, one every ``drip`` seconds."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def answer_one(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                buf = b""
                while b"\r\n\r\n" not in buf:  # the request head, then the answer
                    data = conn.recv(65536)
                    if not data:
                        break
                    buf += data
                if not drip:
                    conn.sendall(answer)
                for i in range(len(answer) if drip else 0):
                    if stop.wait(drip):
                        break
                    conn.sendall(answer[i:i + 1])
            except OSError:
                pass

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if drip:  # (each connection drips at once: none waits silent for another)
                threading.Thread(target=answer_one, args=(conn,), daemon=True).start()
            else:
                answer_one(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()
