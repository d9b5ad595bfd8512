"""The engine's event loop: one thread drives every direct connection.

A thread per connection costs a GIL hand-off at every system call, and with
the many connections a per-connection-capped link needs, those hand-offs cost
more CPU than moving the bytes. Here one thread keeps ``target`` non-blocking
connections busy: it sends ranged GETs, parses the answer's head and moves
each body as data arrives: plain HTTP is spliced socket → pipe → file inside
the kernel; HTTPS is decrypted into a buffer (OpenSSL runs without the GIL,
so the loops decrypt on every core) and written at its offset. Hashing and
installing run in the engine's hash threads.

Only the common case is handled here: origins reached without a proxy,
answered 206 (or 200 for a whole file) with a length, or redirected. A file
whose answer is anything else, or whose TLS handshake fails, is handed with
its range to the threaded path (:meth:`.port.Port.to_threads`), which
classifies errors, backs off and fails over. The loop reaches the run only
through its :class:`.port.Port`.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import selectors
import socket
import ssl
import time
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from ..errors import QwenhomeError, ReadTimeoutError
from ..net import (
    REDIRECT_CODES,
    ContentRange,
    Origin,
    range_headers,
    status_error,
    strong_validator,
    token_for,
    translate,
)
from ..net.head import Head, parse_head, request_head, request_headers
from ..net.url import request_target
from ..store.cache import translate_os_error
from .conns import BODY, CONNECTING, HANDSHAKE, HEAD, SENDING, Conn, Gather, Pool
from .work import Item, Span
from .workers import expired_signed_url

if TYPE_CHECKING:
    from .port import Port

log = logging.getLogger(__name__)

_SLICE = 1 << 20  # bytes moved per readable event and connection
# A turn serves ready connections oldest range first and ends after this long.
# When the machine cannot take every connection's bytes, the oldest ranges
# (the ones holding the files' written prefixes) still get theirs, so the
# hash follows the transfer instead of waiting for a wave of ranges to land.
_TURN = 0.005
ERROR_BODY_MAX = 1 << 16  # bytes of an error answer read for its message
ERROR_BODY_WAIT = 0.25  # seconds its body may trail its head (error answers are rare: the loop may wait)
_HASH_PAUSE = 0.002  # seconds a turn yields to the hash when it is far behind


def _oldest_first(event: tuple[selectors.SelectorKey, int]) -> float:
    conn: Conn = event[0].data
    r = conn.r
    # New work (connects, requests, heads) is cheap and starts bytes moving.
    return -1.0 if r is None or conn.state != BODY else r.t0


class IoLoop:
    """One of the engine's ``loop_threads`` loops; each keeps its share of the
    engine's connection target (splicing runs outside the GIL, so two loops
    move bytes on two cores)."""

    def __init__(self, port: Port, index: int = 0, count: int = 1, gather: Gather = Gather()) -> None:
        self.e = port
        self.index = index
        self.count = count
        self.gather = gather
        self.waited = 0.0  # seconds spent waiting for sockets (read by the controller)
        self.reads = 0  # body reads (each a splice or a decrypting read of up to _SLICE)
        self.pool = Pool(lambda: port.clock())
        self.busy = self.pool.busy
        self.buf = memoryview(bytearray(_SLICE))  # HTTPS bodies are decrypted into this
        self.pipe = os.pipe()
        try:
            fcntl.fcntl(self.pipe[1], fcntl.F_SETPIPE_SZ, _SLICE)
        except (OSError, AttributeError) as exc:  # the default size only means more system calls
            log.debug("pipe size not raised to %d (%s)", _SLICE, exc)

    # -- the loop ---------------------------------------------------------------
    def run(self) -> None:
        e = self.e
        last_check = e.clock()
        try:
            while True:
                work = e.loop_work(self.index, self.count, len(self.busy))
                if work is None:
                    return
                starts, share = work
                if not self.busy and not starts:
                    continue  # (it waited for work)
                now = e.clock()
                self.pool.trim(share - len(self.busy))  # the starts take idle ones first
                for r in starts:
                    self._start(r, now)
                if e.hash_behind():
                    # The hash is a single stream that must end soon after the
                    # last byte: on a machine whose cores are full, it goes
                    # first (the sockets' buffers and TCP hold the senders).
                    time.sleep(_HASH_PAUSE)
                t = e.clock()
                ready = self.pool.sel.select(0.0 if self.pool.again else 0.05)
                now = e.clock()
                self.waited += now - t
                if self.pool.again:
                    ready += self.pool.pending(ready)
                if len(ready) > 1:
                    ready.sort(key=_oldest_first)
                deadline = now + _TURN
                for key, mask in ready:
                    self._ready(key.data, mask)
                    if e.clock() > deadline:
                        break  # the rest stay ready (level-triggered): the oldest go first again
                now = e.clock()
                if now - last_check >= 0.5:
                    last_check = now
                    self._check_stalls(now)
        except BaseException as exc:  # a bug here must end the run, not hang it
            e.abort(exc)
        finally:
            for c in list(self.busy):
                if c.r is not None:
                    e.drop(c.r)  # back to the queue: the threaded path may take it
            self.pool.close_all()
            for fd in self.pipe:
                os.close(fd)

    # -- starting a range ---------------------------------------------------------
    def _start(self, r: Span, now: float) -> None:
        e = self.e
        f = r.item
        cand, url = f.send(r)  # (a failover may have come since the cut)
        if not e.http.direct(url):
            self._to_slow(r)
            return
        origin = Origin.of(url)
        conn = self.pool.take_idle(origin)
        if conn is None:
            try:
                conn = self.pool.connect(origin, now)
            except (OSError, ValueError) as exc:  # (ValueError: a host the resolver cannot take, from a redirect)
                self.pool.next_address(origin)
                self._fail(r, translate(exc, url))
                return
        token = token_for(cand.source.token, cand.source.url, url)
        headers = request_headers(e.http.user_agent, token, range_headers(f.base + r.cur, f.base + r.end, f.validator))
        conn.r, conn.url, conn.out = r, url, request_head("GET", request_target(url), origin.authority, headers)
        conn.last = conn.sent = now
        conn.head.clear()
        self.busy.add(conn)
        if conn.state not in (CONNECTING, HANDSHAKE):
            conn.state = SENDING
            self.pool.send(conn)

    # -- events -------------------------------------------------------------------
    def _ready(self, conn: Conn, mask: int) -> None:
        self.pool.again.discard(conn)  # (put back by the read when decrypted bytes are still waiting)
        r = conn.r
        if r is None:  # an idle keep-alive connection spoke: the server closed it
            self.pool.forget_idle(conn)
            return
        try:
            if conn.state == CONNECTING:
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self.pool.next_address(conn.origin)
                    raise OSError(err, os.strerror(err))
                if conn.tls:
                    self.pool.wrap(conn, self.e.http.ssl_context())
                    self.pool.handshake(conn)
                else:
                    conn.state = SENDING
                    self.pool.send(conn)
            elif conn.state == HANDSHAKE:
                self.pool.handshake(conn)
            elif conn.state == SENDING:
                self.pool.send(conn)
            elif conn.state == HEAD:
                self._read_head(conn, r)
            else:
                self._read_body(conn, r)
        except QwenhomeError as exc:
            self._fail(r, exc, conn)
        except ssl.SSLError as exc:  # (its errno is OpenSSL's, not the system's)
            if conn.state == HANDSHAKE and not isinstance(exc, ssl.SSLEOFError):
                # An untrusted certificate, no common protocol: the threaded
                # path meets the same error and reports it as for any request.
                self.pool.close(conn)
                self._to_slow(r)
            elif conn.reused and conn.state in (SENDING, HEAD) and not conn.head:
                self._retry_fresh(conn, r)
            else:
                self._fail(r, translate(exc, conn.url), conn)
        except OSError as exc:
            if conn.reused and conn.state in (SENDING, HEAD) and not conn.head:
                # A pooled connection the server had closed: once more, fresh.
                self._retry_fresh(conn, r)
                return
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS):
                self.pool.close(conn)
                self.e.abort(translate_os_error(exc, r.item.dest.path))
                return
            if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EBADF) and conn.state == BODY:
                # This filesystem cannot take splice (some network and WSL
                # mounts): every file goes to the threaded path, which reads.
                self.pool.close(conn)
                self.e.no_splice(r)
                return
            self._fail(r, translate(exc, conn.url), conn)

    def _read_head(self, conn: Conn, r: Span) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except ssl.SSLZeroReturnError:
            data = b""  # the server closed TLS cleanly
        if not data:
            raise ConnectionResetError(errno.ECONNRESET, "connection closed before the answer")
        conn.head += data
        conn.pace.add(len(data))
        conn.last = self.e.clock()
        parsed = parse_head(conn.head)
        if parsed is None:
            return
        head, body_at = parsed
        body = bytes(conn.head[body_at:])
        conn.head.clear()
        if conn.reused:  # (a new connection's first answer also waited for the connect)
            self.e.note_ttfb(conn.last - conn.sent)
        conn.reused = False
        conn.keep = head.keep_alive
        if not self._accept(conn, r, head, body):
            return
        conn.state = BODY
        conn.body_t, conn.got = conn.last, 0
        if body:
            self._store(conn, r, body)
        if conn.tls and conn.r is not None and conn.sock.pending():  # type: ignore[attr-defined]
            self.pool.again.add(conn)

    def _accept(self, conn: Conn, r: Span, head: Head, body: bytes) -> bool:
        """Whether the body that follows is ``r``'s; otherwise the range is
        redirected, failed (error statuses, classified as the threaded path
        does), or handed to the threaded path, and the connection closed."""
        e = self.e
        f = r.item
        if head.status in REDIRECT_CODES and head.get("location"):
            self.pool.close(conn)
            if f.direct_url is not None:  # a redirect's target redirects again: the threaded path bounds the chain
                e.to_threads(r)
                return False
            new = urljoin(conn.url, head.get("location") or "")
            e.redirected(r, new, e.http.direct(new))  # a signed CDN URL: the next ranges go straight there
            return False
        e.answered(f)
        if head.status >= 400:
            self._fail(r, _status_error(f, conn.url, head, _error_body(conn, head, body)), conn)
            return False
        if not _fits(head, r):
            # Errors, ignored ranges, odd framing: the threaded path asks again
            # and handles every case (back-off, restart, failover).
            self.pool.close(conn)
            e.to_threads(r)
            return False
        if f.validator is None:
            f.validator = strong_validator(head.get("etag"))
        conn.left = head.length or 0
        return True

    def _read_body(self, conn: Conn, r: Span) -> None:
        e = self.e
        f = r.item
        current, pos, end = e.bounds(r)
        if not current or pos >= end:
            self._finish_range(conn, r, early=True)
            return
        want = min(_SLICE, conn.left, end - pos)
        if conn.tls or not f.dest.spliceable:
            moved, more = conn.read_into(self.buf, want)
            if moved < 0:
                return
            if more:
                self.pool.again.add(conn)  # the rest of a record OpenSSL already decrypted
            wanted = f.dest.put(self.buf, moved, pos, r.gen)
        else:
            try:
                moved = os.splice(conn.sock.fileno(), self.pipe[1], want)
            except BlockingIOError:
                return
            wanted = f.dest.drain(self.pipe[0], moved, pos, r.gen)
        if not wanted:  # a duplicate of bytes now hashed, or the file is done
            return self._finish_range(conn, r, early=True)
        if moved == 0:
            raise ConnectionResetError(errno.ECONNRESET, f"body ended early at byte {pos}")
        self.reads += 1
        conn.pace.add(moved)
        conn.left -= moved
        conn.got += moved
        conn.last = now = e.clock()
        if self.gather.most > 1:
            conn.gather(now, self.gather)
        self._account(conn, r, pos, moved)

    def _store(self, conn: Conn, r: Span, data: bytes) -> None:
        """Body bytes that came with the head."""
        f = r.item
        _, pos, end = self.e.bounds(r)
        data = data[: max(0, min(len(data), end - pos, conn.left))]
        if not f.dest.put(memoryview(data), len(data), pos, r.gen):
            return self._finish_range(conn, r, early=True)
        conn.left -= len(data)
        self._account(conn, r, pos, len(data))

    def _account(self, conn: Conn, r: Span, pos: int, n: int) -> None:
        recorded = self.e.record(r, pos, n, queue_hash=True)  # (the hash threads take a claim)
        finished = recorded is None or recorded[1] >= recorded[2]
        if finished:
            self._finish_range(conn, r, early=conn.left > 0)
        elif conn.left == 0:
            self._finish_range(conn, r, early=False)  # a shorter answer: the rest is handed out again

    def _finish_range(self, conn: Conn, r: Span, early: bool) -> None:
        e = self.e
        self.busy.discard(conn)
        conn.r = None
        # The next range at once, on this connection when it may carry one.
        nxt = e.span_done(r, self.index, self.count, len(self.busy), more=not early and conn.keep)
        if early or not conn.keep:
            self.pool.close(conn)  # bytes of a split or cancelled range are still coming
        else:
            self.pool.park(conn)
        if nxt is not None:
            self._start(nxt, e.clock())  # takes this idle connection when the origin matches

    # -- failures -------------------------------------------------------------------
    def _fail(self, r: Span, exc: BaseException, conn: Conn | None = None) -> None:
        if conn is not None:
            self.pool.close(conn)
        self.e.failed(r, exc)

    def _to_slow(self, r: Span) -> None:
        self.e.to_threads(r)

    def _retry_fresh(self, conn: Conn, r: Span) -> None:
        self.pool.close(conn)
        self.e.drop(r)  # handed out again at once, on a new connection

    def _check_stalls(self, now: float) -> None:
        e = self.e
        for conn, limit in self.pool.stalled(now, e.http.timeouts.connect, e.stall_timeout):
            if conn.r is not None:
                host = conn.origin.host
                self._fail(conn.r, ReadTimeoutError(f"{conn.origin.authority} sent nothing for {limit:g} s",
                                                    code="response-timeout", host=host), conn)
        for conn in self.pool.slow(now, e.min_rate):
            if conn.r is not None:
                self._fail(conn.r, conn.pace.error(conn.origin.authority, conn.origin.host, e.min_rate), conn)


def _error_body(conn: Conn, head: Head, body: bytes) -> bytes:
    """An error answer's body, which says the server's cause: what came with
    its head and, when its length is declared, the rest, waited for a
    moment (the connection is closed after it; a body sent late is otherwise
    missed at random)."""
    want = min(ERROR_BODY_MAX, head.length or 0)
    deadline = time.monotonic() + ERROR_BODY_WAIT
    buf = bytearray(body)
    while len(buf) < want and (left := deadline - time.monotonic()) > 0:
        try:
            chunk = conn.sock.recv(want - len(buf))
        except (BlockingIOError, ssl.SSLWantReadError):
            _wait_readable(conn.sock, left)
            continue
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _wait_readable(sock: socket.socket, timeout: float) -> None:
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        sel.select(timeout)


def _status_error(f: Item, url: str, head: Head, body: bytes) -> QwenhomeError:
    expired = expired_signed_url(f, url, head.status)
    return expired if expired is not None else status_error(head.status, head, url, None, body)


def _fits(head: Head, r: Span) -> bool:
    """Whether the body that follows ``head`` is exactly ``r``'s rest: a 206
    for it with a length, or a 200 of the whole item when ``r`` is all of it."""
    item = r.item
    size, length = item.size, head.length
    if length is None or "chunked" in (head.get("transfer-encoding") or "").lower():
        return False
    if head.status == 206:
        cr = ContentRange.parse(head.get("content-range"))
        return (cr is not None and cr.first == item.base + r.cur and cr.length == length
                and (cr.total == size or not item.whole))
    return head.status == 200 and item.whole and r.cur == 0 and r.end == size and length == size
