"""Connections opened before the transfer knows it needs them.

A pull first asks its source for the listing (and, for a Hub source, the
largest file's resolve with HEAD): one or two round trips during which the
transfer's own connections would sit unopened. :class:`Preconnect` starts a
few TCP connects to the source at the pull's start, so the first ranges go
out on sockets already connected, a round trip earlier; the engine's event
loops adopt them (:meth:`TransferEngine.run`, ``warm``) and close those the
run does not use. Only TCP: a TLS handshake is the loops' own, with the
client's context, when a range first goes out on the socket.
"""

from __future__ import annotations

import logging
import socket
import threading

from ..net import Origin
from ..net.steps import resolve, start_connect

log = logging.getLogger(__name__)

# Connections opened ahead: enough to fill a link whose connections are each
# capped (8 at 20 MB/s carry 160 MB/s from the first range on) while the rest
# of the first wave connects; few enough that a pull of one small file or of
# nothing (all cached) wastes little of a server's connections.
COUNT = 8


class Preconnect:
    """Non-blocking TCP connects to ``origin`` begun in a thread (the name's
    lookup blocks), handed over once with :meth:`take`."""

    def __init__(self, origin: Origin, count: int = COUNT) -> None:
        self.origin = origin
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._open, args=(count,), daemon=True, name="qh-preconnect")
        self._thread.start()

    def _open(self, count: int) -> None:
        try:
            address = resolve(self.origin.host, self.origin.port)[0]
            for _ in range(count):
                sock = start_connect(address)
                with self._lock:
                    if self._closed:
                        sock.close()
                        return
                    self._socks.append(sock)
        except (OSError, IndexError, ValueError) as exc:  # the transfer connects itself, and says why
            log.debug("no connections opened ahead to %s: %s", self.origin.authority, exc)

    def take(self) -> list[socket.socket]:
        """The sockets opened so far (the caller owns them now); none after."""
        with self._lock:
            socks, self._socks = self._socks, []
            self._closed = True
        return socks

    def close(self) -> None:
        """Close what was not taken."""
        for sock in self.take():
            sock.close()
