"""Idle keep-alive connections per origin, shared by threads."""

from __future__ import annotations

import http.client
import threading

from .url import Origin


class ConnectionPool:
    def __init__(self, max_idle_per_origin: int = 64) -> None:
        self._idle: dict[Origin, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._max = max_idle_per_origin

    def get(self, origin: Origin) -> http.client.HTTPConnection | None:
        with self._lock:
            conns = self._idle.get(origin)
            return conns.pop() if conns else None

    def put(self, origin: Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            conns = self._idle.setdefault(origin, [])
            if len(conns) < self._max:
                conns.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            for conns in self._idle.values():
                for c in conns:
                    c.close()
            self._idle.clear()
