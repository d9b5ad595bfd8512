"""A TCP proxy that shapes the network in front of any Hub server, for
``transfer.py --endpoint URL --shape``: the limited, latency and resume
scenarios then run against a server this project did not write, shaped the
same way as the project's own server shapes itself.

    python bench/_shaper.py --upstream http://HOST:PORT [--bandwidth BYTES_PER_S] [--latency SECONDS]
                            [--link BYTES_PER_S] [--connect-latency SECONDS]

Each client connection gets its own upstream connection. Server → client
bytes are spliced through a pipe (no copy into Python) at ``--bandwidth``
per TCP connection (the token bucket of the project's server, 50 ms of
burst, as a CDN paces) and, with ``--link``, at most that rate over all
connections together (one shared bucket, 50 ms of burst: the user's link);
client → server bytes (the requests) wait ``--latency`` before they are
passed on, so every response starts that much later, and a new
connection's first request waits ``--connect-latency`` more (its TCP
handshake's round trip on a real link). Runs in its own
process, so its CPU is not billed to the tool measured. Speaks the same
stdin line protocol as ``_server.py`` (``mark``, ``stats``, ``quit``); the
stats count connections and the bytes sent to clients (bodies and heads),
and when they went: the first and the last byte (``time.monotonic()``, the
system-wide clock every process reads alike) and the bytes of every 10 ms
(``BIN``), so a run's idle time at its start and its end can be told apart.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.faults import TokenBucket  # the pacing the project's server uses

SLICE = 256 * 1024
BIN = 0.01  # seconds of the byte timeline's bins


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False  # never released early


class Link:
    """A rate shared by every connection. Each taker reserves its bytes at once
    (the tokens may go below zero) and sleeps off its debt, so takers are
    served in the order they came and the total never exceeds the rate plus
    one burst."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = rate / 20
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int) -> None:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) - n
            self.stamp = now
            debt = -self.tokens
        if debt > 0:
            time.sleep(debt / self.rate)


class Shaper:
    def __init__(self, upstream: tuple[str, int], bandwidth: float | None, latency: float | None,
                 link: float | None = None, connect_latency: float | None = None) -> None:
        self.upstream = upstream
        self.bandwidth = bandwidth
        self.latency = latency
        self.link = Link(link) if link else None
        self.connect_latency = connect_latency
        self.lock = threading.Lock()
        self.connections = 0
        self.bytes_down = 0
        self.bins: dict[int, int] = {}  # int(time.monotonic() / BIN) -> bytes sent to clients in that bin
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]

    def serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(client,), daemon=True).start()

    def _connection(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            self.connections += 1
        up = threading.Thread(target=self._requests, args=(client, server), daemon=True)
        up.start()
        self._responses(server, client)
        up.join()
        client.close()
        server.close()

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        """Client → server, each chunk held ``latency`` seconds (the first one
        ``connect_latency`` more)."""
        if self.connect_latency:
            time.sleep(self.connect_latency)
        try:
            while data := client.recv(65536):
                if self.latency:
                    time.sleep(self.latency)
                server.sendall(data)
        except OSError:
            pass
        try:
            server.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _responses(self, server: socket.socket, client: socket.socket) -> None:
        """Server → client, spliced and paced."""
        bucket = TokenBucket(self.bandwidth) if self.bandwidth else None
        r, w = os.pipe()
        try:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, SLICE)
        except OSError:
            pass
        try:
            while True:
                want = SLICE if bucket is None else min(SLICE, int(bucket.burst))
                n = os.splice(server.fileno(), w, want)
                if n <= 0:
                    break
                if bucket is not None:
                    bucket.take(n, _sleep)
                if self.link is not None:
                    self.link.take(n)
                left = n
                while left:
                    left -= os.splice(r, client.fileno(), left)
                stamp = int(time.monotonic() / BIN)
                with self.lock:
                    self.bytes_down += n
                    self.bins[stamp] = self.bins.get(stamp, 0) + n
        except OSError:
            pass
        finally:
            os.close(r)
            os.close(w)
            try:
                client.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", required=True, help="the Hub server's URL (http://host:port)")
    ap.add_argument("--bandwidth", type=float, default=None, help="bytes/s per TCP connection")
    ap.add_argument("--latency", type=float, default=None, help="seconds before each request is passed on")
    ap.add_argument("--link", type=float, default=None, help="bytes/s over all connections together")
    ap.add_argument("--connect-latency", type=float, default=None,
                    help="seconds more before a new connection's first request is passed on")
    args = ap.parse_args()
    parts = urlsplit(args.upstream)
    if parts.scheme != "http" or not parts.hostname:
        raise SystemExit("--upstream must be an http:// URL")
    shaper = Shaper((parts.hostname, parts.port or 80), args.bandwidth, args.latency, args.link,
                    args.connect_latency)
    threading.Thread(target=shaper.serve, daemon=True).start()
    print(json.dumps({"url": f"http://127.0.0.1:{shaper.port}"}), flush=True)
    conns0, bytes0, cpu0 = 0, 0, _cpu()
    for line in sys.stdin:
        command = line.strip()
        if command == "mark":
            with shaper.lock:
                conns0, bytes0 = shaper.connections, shaper.bytes_down
                shaper.bins = {}
            cpu0 = _cpu()
            print(json.dumps({"ok": True}), flush=True)
        elif command == "stats":
            time.sleep(0.2)  # let the last connections' counts land
            with shaper.lock:
                bins = sorted(shaper.bins.items())
                doc: dict[str, object] = {
                    "connections": shaper.connections - conns0, "bytes_sent": shaper.bytes_down - bytes0,
                    "requests": None, "file_requests": None, "bytes_per_file": {}, "statuses": {},
                    "cpu_s": round(_cpu() - cpu0, 3), "shaper": True,
                    "bin_s": BIN, "timeline": [[k, n] for k, n in bins],
                }
            print(json.dumps(doc), flush=True)
        elif command == "quit":
            print(json.dumps({"ok": True}), flush=True)
            break
        else:
            print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)
    shaper.listener.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
