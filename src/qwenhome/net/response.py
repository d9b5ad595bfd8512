"""A response whose body may still be streaming, read into buffers or spliced
socket → file inside the kernel."""

from __future__ import annotations

import errno
import http.client
import os
import select
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ProtocolError
from .pool import ConnectionPool
from .translate import translate
from .url import Origin

_READ_STEP = 1 << 20  # read() reads this much at a time, and gives each that long


@dataclass
class Response:
    """A response whose body may still be streaming. Call ``release`` (body read
    to the end: the connection is reused) or ``close`` (connection dropped)."""

    status: int
    headers: http.client.HTTPMessage
    url: str
    _resp: http.client.HTTPResponse
    _conn: http.client.HTTPConnection
    _pool: ConnectionPool
    _origin: Origin
    _done: bool = field(default=False)
    _drained: bool = field(default=False)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def readinto(self, buf: memoryview) -> int:
        """Up to ``len(buf)`` body bytes (0 at the end): what the socket has,
        waiting only while it has nothing. Never waits to fill ``buf``: a
        caller counting the bytes as they come must see a body trickled a
        byte at a time; a flowing body still fills it (one TLS record a read)."""
        resp = self._resp
        try:
            if resp.chunked or resp.length is None or resp.fp is None:
                data = resp.read1(len(buf))
                buf[: len(data)] = data
                return len(data)
            want = min(len(buf), resp.length)
            got = n = resp.fp.readinto1(buf[:want])
            while n and got < want and self._more_ready():
                n = resp.fp.readinto1(buf[got:want])
                got += n
            resp.length -= got
            if got and resp.length == 0:
                resp.read()  # (at the end: closes the response, so the connection may be reused)
            return got
        except BaseException as exc:
            self.close()
            raise translate(exc, self.url) from exc

    def _more_ready(self) -> bool:
        """Body bytes can be read without waiting: decrypted in OpenSSL, or in the socket."""
        sock = self._conn.sock
        if sock is None:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))

    def can_splice(self) -> bool:
        """Whether the body can move socket → file inside the kernel (Linux
        ``splice``): plain HTTP with a known length. TLS must be decrypted in
        user space, so it always takes ``readinto``."""
        sock = self._conn.sock
        return (
            hasattr(os, "splice")
            and sock is not None
            and not isinstance(sock, ssl.SSLSocket)
            and self._resp.length is not None
            and not self._resp.chunked
        )

    def splice_into(self, count: int, pipe: tuple[int, int], timeout: float,
                    land: Callable[[bytes | None, int], bool]) -> int:
        """Move up to ``count`` body bytes through ``pipe`` without copying them
        through user space; returns how many (0 at EOF). Only after
        :meth:`can_splice`. Spares the two copies of recv + pwrite.

        ``land(data, n)`` puts them in place: ``data``, what the header parser
        read ahead, or None: ``n`` bytes waiting in ``pipe[0]``, which it must
        empty. It answers False when they were not wanted after all (then this
        returns -1): the socket wait is not inside it, so it may hold a lock."""
        resp = self._resp
        sock = self._conn.sock
        assert sock is not None and resp.fp is not None and resp.length is not None
        count = min(count, resp.length)
        if count <= 0:
            return 0
        try:
            if not self._drained:
                # What the header parser read ahead sits in the buffered reader:
                # hand it over first, then read the socket directly.
                self._drained = True
                head = resp.fp.peek(1)[:count]
                if head:
                    data = resp.fp.read(len(head))
                    resp.length -= len(data)
                    wanted = land(data, len(data))
                    self._finish_if_done()
                    return len(data) if wanted else -1
            while True:
                try:
                    moved = os.splice(sock.fileno(), pipe[1], count)
                    break
                except BlockingIOError:
                    poller = select.poll()
                    poller.register(sock.fileno(), select.POLLIN)
                    if not poller.poll(timeout * 1000):
                        raise TimeoutError(f"no byte for {timeout:.0f} s") from None
            if moved == 0:
                return 0
            wanted = land(None, moved)
        except OSError as exc:
            self.close()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EINVAL, errno.EBADF):
                raise  # the file side: the caller classifies
            raise translate(exc, self.url) from exc
        resp.length -= moved
        self._finish_if_done()
        return moved if wanted else -1

    def _finish_if_done(self) -> None:
        if self._resp.length == 0:
            self._resp.read()  # closes the response cleanly: the connection can be reused

    def read(self, limit: int = 64 << 20) -> bytes:
        """The whole body (at most ``limit`` bytes). Each MiB must come within
        one read time-out: the time-out bounds each wait for a byte, so a
        server trickling a byte every few seconds would hold the caller
        forever without this bound (a slow link still gets 30 s per MiB)."""
        sock = self._conn.sock
        window = sock.gettimeout() if sock is not None else None
        start = time.monotonic()
        parts: list[bytes] = []
        got = 0
        try:
            while got <= limit:
                part = self._resp.read1(min(_READ_STEP, limit + 1 - got))
                if not part:
                    self._resp.read()  # (at the end: marks the response closed, so the connection is reused)
                    break
                parts.append(part)
                got += len(part)
                if window and time.monotonic() - start > window * (1 + got // _READ_STEP):
                    raise TimeoutError(f"body of {self.url} still incomplete after {window * (1 + got // _READ_STEP):.0f} s")
        except BaseException as exc:
            self.close()
            raise translate(exc, self.url) from exc
        data = b"".join(parts)
        if len(data) > limit:
            self.close()
            raise ProtocolError(f"response from {self.url} is larger than {limit} bytes", code="bad-metadata")
        self.release()
        return data

    def release(self) -> None:
        if self._done:
            return
        self._done = True
        if self._resp.isclosed() and not self._resp.will_close:
            self._pool.put(self._origin, self._conn)
        else:
            self._conn.close()

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._conn.close()


def drain_pipe(pipe_r: int, fd: int, pos: int, count: int) -> None:
    """Move ``count`` bytes waiting in a pipe into ``fd`` at ``pos`` (splice's
    second half: pipe → file). A short write means the disk is filling up."""
    done = 0
    while done < count:
        n = os.splice(pipe_r, fd, count - done, offset_dst=pos + done)
        if n <= 0:
            raise OSError(errno.ENOSPC, "short write")
        done += n


def discard_pipe(pipe_r: int, count: int) -> None:
    """Read ``count`` bytes waiting in a pipe and drop them (they were not
    wanted after all: the pipe must be empty for the next splice)."""
    while count > 0:
        data = os.read(pipe_r, min(count, 1 << 20))
        if not data:
            raise OSError(errno.EIO, "pipe emptied early")
        count -= len(data)
