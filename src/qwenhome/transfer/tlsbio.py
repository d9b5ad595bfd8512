"""TLS for the event loop, over memory buffers instead of the socket.

An ``SSLSocket`` reads a record header and then its body with two system
calls per 16 KiB record. Here the loop reads the socket itself, as much as is
there (up to 1 MiB) in one call, and OpenSSL decrypts from memory. OpenSSL
runs without the GIL, so two loops decrypt on two cores.
"""

from __future__ import annotations

import ssl


class TlsBio:
    """The TLS state of one connection. The caller moves ``outgoing`` bytes to
    the socket and gives what the socket returns to ``feed``."""

    __slots__ = ("bio_in", "bio_out", "eof", "obj", "starved")

    def __init__(self, ctx: ssl.SSLContext, host: str) -> None:
        self.bio_in = ssl.MemoryBIO()
        self.bio_out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.bio_in, self.bio_out, server_hostname=host)
        self.eof = False  # the stream ended (socket closed, or close_notify)
        self.starved = True  # the last read stopped for want of a whole record

    def handshake(self) -> bool:
        """One step: True once done (raises ``ssl.SSLError`` when it fails)."""
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def outgoing(self) -> bytes:
        return self.bio_out.read()

    def encrypt(self, data: bytes) -> bytes:
        self.obj.write(data)
        return self.bio_out.read()

    def feed(self, data: bytes | memoryview) -> None:
        if data:
            self.bio_in.write(data)
        else:
            self.eof = True

    def read_into(self, buf: memoryview, limit: int) -> int:
        """Decrypted bytes into ``buf[:limit]`` from what was fed; 0 when none
        is ready yet. (A read returns at most one record: read on.)"""
        got = 0
        obj = self.obj
        self.starved = False
        try:
            while got < limit:
                # With a buffer, read returns the count (typeshed says bytes).
                n: int = obj.read(limit - got, buf[got:limit])  # type: ignore[assignment]
                if not n:  # close_notify
                    self.eof = True
                    break
                got += n
        except ssl.SSLWantReadError:
            self.starved = True
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            self.eof = True
        return got

    def ready(self) -> bool:
        """Whole records wait in memory (the last read stopped at its limit):
        select would not report them, and the socket may stay quiet."""
        return not self.starved and (self.bio_in.pending > 0 or self.obj.pending() > 0)
