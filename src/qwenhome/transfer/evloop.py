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
its range to the threaded path (``TransferEngine._make_slow``), which
classifies errors, backs off and fails over.
"""

from __future__ import annotations

import errno
import fcntl
import os
import selectors
import socket
import ssl
import sys
import termios
import time
from email.message import Message
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from ..errors import QwenhomeError, ReadTimeoutError
from ..hub.errors import raise_for_status
from ..hub.http import REDIRECT_CODES, Origin, drain_pipe, token_for, translate
from ..store.cache import translate_os_error
from . import rawhttp
from .work import Item, Span
from .workers import expired_signed_url

if TYPE_CHECKING:
    from .engine import TransferEngine

_CONNECTING, _HANDSHAKE, _SENDING, _HEAD, _BODY = range(5)
_SLICE = 1 << 20  # bytes moved per readable event and connection
# A turn serves ready connections oldest range first and ends after this long.
# When the machine cannot take every connection's bytes, the oldest ranges
# (the ones holding the files' written prefixes) still get theirs, so the
# hash follows the transfer instead of waiting for a wave of ranges to land.
_TURN = 0.005


def _oldest_first(event: tuple[selectors.SelectorKey, int]) -> float:
    conn: _Conn = event[0].data
    r = conn.r
    # New work (connects, requests, heads) is cheap and starts bytes moving.
    return -1.0 if r is None or conn.state != _BODY else r.t0


class _Conn:
    __slots__ = ("body_t", "got", "head", "keep", "last", "left", "lowat", "origin", "out", "r", "reused", "sent",
                 "sock", "state", "tls", "url")

    def __init__(self, sock: socket.socket, origin: Origin, now: float) -> None:
        self.sock = sock
        self.tls = origin.scheme == "https"  # sock becomes an SSLSocket once connected
        self.origin = origin
        self.state = _CONNECTING
        self.r: Span | None = None
        self.url = ""
        self.out = b""
        self.head = bytearray()
        self.left = 0  # body bytes of the current response not yet read
        self.last = now  # last sign of life: stalls are measured from here
        self.reused = False
        self.sent = now  # when the current request was handed to the connection
        self.keep = True
        self.lowat = 1  # the socket's SO_RCVLOWAT (the kernel's default is 1)
        self.body_t = now  # when the current body began, and its bytes read since
        self.got = 0


class IoLoop:
    """One of the engine's ``loop_threads`` loops; each keeps its share of the
    engine's connection target (splicing runs outside the GIL, so two loops
    move bytes on two cores)."""

    def __init__(self, engine: TransferEngine, index: int = 0, count: int = 1) -> None:
        self.e = engine
        self.index = index
        self.count = count
        self.waited = 0.0  # seconds spent waiting for sockets (read by the controller)
        self.reads = 0  # body reads (each a splice or a decrypting read of up to _SLICE)
        self.sel = selectors.DefaultSelector()
        self.busy: set[_Conn] = set()
        self.idle: dict[Origin, list[_Conn]] = {}
        self.addrs: dict[Origin, list[tuple[socket.AddressFamily, tuple[str, int]]]] = {}
        self.again: set[_Conn] = set()  # TLS connections with decrypted bytes select cannot see
        self.buf = memoryview(bytearray(_SLICE))  # HTTPS bodies are decrypted into this
        self.pipe = os.pipe()
        try:
            fcntl.fcntl(self.pipe[1], fcntl.F_SETPIPE_SZ, _SLICE)
        except (OSError, AttributeError):
            pass

    # -- the loop ---------------------------------------------------------------
    def run(self) -> None:
        e = self.e
        last_check = e.clock()
        try:
            while True:
                starts: list[Span] = []
                with e._cv:
                    if e._fatal is not None or not e._active or not e._loop_on:
                        return
                    now = e.clock()
                    share = self._share()
                    while len(self.busy) + len(starts) < share:
                        r = e._next_fast(now)
                        if r is None:
                            break
                        starts.append(r)
                    if not self.busy and not starts:
                        e._cv.wait(0.05)  # nothing to move: woken by new work
                        continue
                    self._trim(share - len(self.busy))  # the starts take idle ones first
                for r in starts:
                    self._start(r, now)
                if e._hash_backlog > e.cfg.hash_ahead:
                    # The hash is a single stream that must end soon after the
                    # last byte: on a machine whose cores are full, it goes
                    # first (the sockets' buffers and TCP hold the senders).
                    time.sleep(0.002)
                t = e.clock()
                ready = self.sel.select(0.0 if self.again else 0.05)
                now = e.clock()
                self.waited += now - t
                if self.again:
                    ready += self._pending(ready)
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
            e._abort(exc)
        finally:
            for c in list(self.busy):
                if c.r is not None:
                    with e._cv:
                        e._drop(c.r)  # back to the queue: the threaded path may take it
            for c in list(self.busy) + [c for cs in self.idle.values() for c in cs]:
                self._close(c)
            self.sel.close()
            for fd in self.pipe:
                os.close(fd)

    def _pending(self, ready: list[tuple[selectors.SelectorKey, int]]) -> list[tuple[selectors.SelectorKey, int]]:
        """TLS connections whose decrypted bytes wait inside OpenSSL: their
        socket may have nothing more, so select would not report them."""
        seen = {key.data for key, _ in ready}
        extra = []
        for conn in list(self.again):
            if conn.r is None:
                self.again.discard(conn)  # idle now: its next answer comes through select
            elif conn not in seen:
                try:
                    extra.append((self.sel.get_key(conn.sock), selectors.EVENT_READ))
                except (KeyError, ValueError):
                    self.again.discard(conn)
        # (A connection leaves the set when it is served: a turn that ends
        # early must not lose the ones it did not reach.)
        return extra

    def _share(self) -> int:
        """This loop's part of the engine's connection target (under the lock)."""
        target = self.e._ctl.target
        return target // self.count + (1 if self.index < target % self.count else 0)

    def _trim(self, keep: int) -> None:
        """Close idle connections beyond ``keep`` (the target shrank or work ran out)."""
        extra = sum(len(cs) for cs in self.idle.values()) - max(0, keep)
        for cs in self.idle.values():
            while cs and extra > 0:
                self._close(cs.pop())
                extra -= 1

    # -- starting a range ---------------------------------------------------------
    def _start(self, r: Span, now: float) -> None:
        e = self.e
        f = r.item
        cand, url = f.send(r)  # (a failover may have come since the cut)
        if not e.http.direct(url):
            self._to_slow(r)
            return
        origin = Origin.of(url)
        conn = self._idle_conn(origin)
        if conn is None:
            try:
                conn = self._connect(origin, now)
            except OSError as exc:
                self._next_address(origin)
                self._fail(r, translate(exc, url))
                return
        headers = {"User-Agent": e.http.user_agent, "Accept-Encoding": "identity",
                   "Range": f"bytes={r.cur}-{r.end - 1}"}
        if f.validator and r.cur > 0:
            headers["If-Range"] = f.validator
        token = token_for(cand.source.token, cand.source.url, url)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.r, conn.url, conn.out = r, url, rawhttp.request(url, origin.authority, headers)
        conn.last = conn.sent = now
        conn.head.clear()
        self.busy.add(conn)
        if conn.state not in (_CONNECTING, _HANDSHAKE):
            conn.state = _SENDING
            self._send(conn)

    def _idle_conn(self, origin: Origin) -> _Conn | None:
        conns = self.idle.get(origin)
        if not conns:
            return None
        conn = conns.pop()
        conn.reused = True
        return conn

    def _connect(self, origin: Origin, now: float) -> _Conn:
        if origin not in self.addrs:
            # Resolved once per origin (blocking, but only the first time).
            infos = socket.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
            self.addrs[origin] = [(socket.AddressFamily(i[0]), (str(i[4][0]), int(i[4][1]))) for i in infos]
        family, addr = self.addrs[origin][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(err, os.strerror(err))
        conn = _Conn(sock, origin, now)
        self.sel.register(sock, selectors.EVENT_WRITE, conn)
        return conn

    # -- events -------------------------------------------------------------------
    def _next_address(self, origin: Origin) -> None:
        """This address failed: the next connection tries the host's next one
        (IPv6 then IPv4, say), as ``socket.create_connection`` would."""
        addrs = self.addrs.get(origin)
        if addrs and len(addrs) > 1:
            addrs.append(addrs.pop(0))

    def _ready(self, conn: _Conn, mask: int) -> None:
        self.again.discard(conn)  # (put back by the read when decrypted bytes are still waiting)
        r = conn.r
        if r is None:  # an idle keep-alive connection spoke: the server closed it
            self._forget_idle(conn)
            return
        try:
            if conn.state == _CONNECTING:
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._next_address(conn.origin)
                    raise OSError(err, os.strerror(err))
                if conn.tls:
                    self._wrap(conn)
                    self._handshake(conn)
                else:
                    conn.state = _SENDING
                    self._send(conn)
            elif conn.state == _HANDSHAKE:
                self._handshake(conn)
            elif conn.state == _SENDING:
                self._send(conn)
            elif conn.state == _HEAD:
                self._read_head(conn, r)
            else:
                self._read_body(conn, r)
        except QwenhomeError as exc:
            self._fail(r, exc, conn)
        except ssl.SSLError as exc:  # (its errno is OpenSSL's, not the system's)
            if conn.state == _HANDSHAKE and not isinstance(exc, ssl.SSLEOFError):
                # An untrusted certificate, no common protocol: the threaded
                # path meets the same error and reports it as for any request.
                self._close(conn)
                self._to_slow(r)
            elif conn.reused and conn.state in (_SENDING, _HEAD) and not conn.head:
                self._retry_fresh(conn, r)
            else:
                self._fail(r, translate(exc, conn.url), conn)
        except OSError as exc:
            if conn.reused and conn.state in (_SENDING, _HEAD) and not conn.head:
                # A pooled connection the server had closed: once more, fresh.
                self._retry_fresh(conn, r)
                return
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS):
                self._close(conn)
                self.e._abort(translate_os_error(exc, r.item.dest.path))
                return
            if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EBADF) and conn.state == _BODY:
                # This filesystem cannot take splice (some network and WSL
                # mounts): every file goes to the threaded path, which reads.
                self._close(conn)
                with self.e._cv:
                    self.e._drop(r)
                    self.e._abandon_loop()
                return
            self._fail(r, translate(exc, conn.url), conn)

    def _wrap(self, conn: _Conn) -> None:
        """TCP is up: TLS over it (the client's context: its CA file, SNI, checks)."""
        self.sel.unregister(conn.sock)
        conn.sock = self.e.http.ssl_context().wrap_socket(conn.sock, server_hostname=conn.origin.host,
                                                          do_handshake_on_connect=False)
        conn.state = _HANDSHAKE
        self.sel.register(conn.sock, selectors.EVENT_WRITE, conn)

    def _handshake(self, conn: _Conn) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self.sel.modify(sock, selectors.EVENT_READ, conn)
            return
        except ssl.SSLWantWriteError:
            self.sel.modify(sock, selectors.EVENT_WRITE, conn)
            return
        conn.last = self.e.clock()
        conn.state = _SENDING
        self._send(conn)

    def _send(self, conn: _Conn) -> None:
        try:
            n = conn.sock.send(conn.out)
        except (BlockingIOError, ssl.SSLWantWriteError):
            n = 0
        except ssl.SSLWantReadError:  # TLS needs the peer's bytes first
            self.sel.modify(conn.sock, selectors.EVENT_READ, conn)
            return
        conn.out = conn.out[n:]
        if not conn.out:
            conn.state = _HEAD
            self.sel.modify(conn.sock, selectors.EVENT_READ, conn)
        else:
            self.sel.modify(conn.sock, selectors.EVENT_WRITE, conn)

    def _read_head(self, conn: _Conn, r: Span) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except ssl.SSLZeroReturnError:
            data = b""  # the server closed TLS cleanly
        if not data:
            raise ConnectionResetError(errno.ECONNRESET, "connection closed before the answer")
        conn.head += data
        conn.last = self.e.clock()
        parsed = rawhttp.parse_head(conn.head)
        if parsed is None:
            return
        head, body_at = parsed
        body = bytes(conn.head[body_at:])
        conn.head.clear()
        if conn.reused:  # (a new connection's first answer also waited for the connect)
            self.e._sizer.note_ttfb(conn.last - conn.sent)
        conn.reused = False
        conn.keep = head.keep_alive
        if not self._accept(conn, r, head, body):
            return
        conn.state = _BODY
        conn.body_t, conn.got = conn.last, 0
        if body:
            self._store(conn, r, body)
        if conn.tls and conn.r is not None and conn.sock.pending():  # type: ignore[attr-defined]
            self.again.add(conn)

    def _accept(self, conn: _Conn, r: Span, head: rawhttp.Head, body: bytes) -> bool:
        """Whether the body that follows is ``r``'s; otherwise the range is
        redirected, failed (error statuses, classified as the threaded path
        does), or handed to the threaded path, and the connection closed."""
        e = self.e
        f = r.item
        size = f.size
        length = head.length
        if head.status in REDIRECT_CODES and head.get("location"):
            new = urljoin(conn.url, head.get("location") or "")
            self._close(conn)
            with e._cv:
                f.direct_url = new  # a signed CDN URL: the next ranges go straight there
                f.answered = True  # (together: no other loop may start one at the old URL)
                e._drop(r)
                if not e.http.direct(new):
                    e._make_slow(f)
            return False
        e._mark_answered(f)
        if head.status >= 400:
            self._fail(r, self._status_error(f, conn.url, head, body), conn)
            return False
        ok = False
        if length is not None and "chunked" not in (head.get("transfer-encoding") or "").lower():
            if head.status == 206:
                span = (head.get("content-range") or "").replace("bytes", "", 1).strip()
                first, _, rest = span.partition("-")
                last, _, total = rest.partition("/")
                ok = (first.isdigit() and last.isdigit() and total.isdigit() and int(first) == r.cur
                      and int(total) == size and int(last) - int(first) + 1 == length)
            elif head.status == 200:
                ok = r.cur == 0 and r.end == size and length == size
        if not ok:
            # Errors, ignored ranges, odd framing: the threaded path asks again
            # and handles every case (back-off, restart, failover).
            self._close(conn)
            with e._cv:
                e._drop(r)
                e._make_slow(f)
            return False
        if f.validator is None:
            etag = head.get("etag")
            if etag and not etag.startswith("W/"):
                f.validator = etag
        conn.left = length or 0
        return True

    def _read_body(self, conn: _Conn, r: Span) -> None:
        e = self.e
        f = r.item
        with e._cv:
            current = r.gen == f.gen and f.active and e._fatal is None
            pos, end = r.cur, r.end
        if not current or pos >= end:
            self._finish_range(conn, r, early=True)
            return
        want = min(_SLICE, conn.left, end - pos)
        if conn.tls:
            moved = self._decrypt(conn, want)
            if moved < 0:
                return
            f.dest.write(self.buf, moved, pos)
        else:
            try:
                moved = os.splice(conn.sock.fileno(), self.pipe[1], want)
            except BlockingIOError:
                return
            drain_pipe(self.pipe[0], f.dest.fd, f.dest.offset + pos, moved)
        if moved == 0:
            raise ConnectionResetError(errno.ECONNRESET, f"body ended early at byte {pos}")
        self.reads += 1
        conn.left -= moved
        conn.got += moved
        conn.last = now = e.clock()
        if e.cfg.rcvlowat > 1:
            self._set_lowat(conn, now)
        self._account(conn, r, pos, moved)

    def _set_lowat(self, conn: _Conn, now: float) -> None:
        """Let the socket gather ``rcvlowat_time`` of this body (at most
        ``rcvlowat``) before select reports it: fewer, larger reads, so less
        CPU per byte when a server or link sends in small pieces. Never more
        than the body has brought so far (a first burst says little of a slow
        link's rate: the stall timer must not fire while bytes gather) nor
        than the bytes still to come (TLS: less a record's worth, which
        OpenSSL may hold), or the last ones would never be reported."""
        cfg = self.e.cfg
        rate = conn.got / max(now - conn.body_t, 0.001)
        left = conn.left - 40 * 1024 if conn.tls else conn.left
        want = max(1, min(cfg.rcvlowat, int(rate * cfg.rcvlowat_time), conn.got, left))
        if want < conn.lowat or want > 2 * conn.lowat:
            self._lowat(conn, want)

    @staticmethod
    def _lowat(conn: _Conn, n: int) -> None:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, n)
        conn.lowat = n

    def _decrypt(self, conn: _Conn, want: int) -> int:
        """Up to ``want`` body bytes into ``self.buf``: -1 when none is ready,
        0 at the end of the stream. (One TLS record per read: read on until
        the socket has no more, or ``want`` is reached.)"""
        sock = conn.sock
        got = 0
        try:
            while got < want:
                n = sock.recv_into(self.buf[got:want])
                if n == 0:
                    break
                got += n
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            if got == 0:
                return -1
        except ssl.SSLZeroReturnError:
            pass
        if got and sock.pending():  # type: ignore[attr-defined]
            self.again.add(conn)  # the rest of a record OpenSSL already decrypted
        return got

    def _store(self, conn: _Conn, r: Span, data: bytes) -> None:
        """Body bytes that came with the head."""
        f = r.item
        with self.e._cv:
            pos, end = r.cur, r.end
        data = data[: max(0, min(len(data), end - pos, conn.left))]
        f.dest.write(memoryview(data), len(data), pos)
        conn.left -= len(data)
        self._account(conn, r, pos, len(data))

    def _account(self, conn: _Conn, r: Span, pos: int, n: int) -> None:
        e = self.e
        f = r.item
        with e._cv:
            if r.gen != f.gen:
                claimed = False
            else:
                claimed = n > 0 and e._record(r, pos, n)
                if claimed:
                    e._hash_q.append(f)
                    e._hash_work.notify()
            finished = r.cur >= r.end or r.gen != f.gen
        if finished:
            self._finish_range(conn, r, early=conn.left > 0)
        elif conn.left == 0:
            self._finish_range(conn, r, early=False)  # a shorter answer: the rest is handed out again

    def _finish_range(self, conn: _Conn, r: Span, early: bool) -> None:
        e = self.e
        nxt: Span | None = None
        with e._cv:
            e._drop(r)
            self.busy.discard(conn)
            conn.r = None
            if not early and conn.keep and e._fatal is None and len(self.busy) < self._share():
                # The next range at once, on this connection: waiting for the
                # loop's next turn leaves it idle while the other events run.
                nxt = e._next_fast(e.clock())
        if early or not conn.keep:
            self._close(conn)  # bytes of a split or cancelled range are still coming
        else:
            self.idle.setdefault(conn.origin, []).append(conn)
        if nxt is not None:
            self._start(nxt, e.clock())  # takes this idle connection when the origin matches

    # -- failures -------------------------------------------------------------------
    def _status_error(self, f: Item, url: str, head: rawhttp.Head, body: bytes) -> QwenhomeError:
        expired = expired_signed_url(f, url, head.status)
        if expired is not None:
            return expired
        headers = Message()
        for name, value in head.headers.items():
            headers[name] = value
        try:
            raise_for_status(head.status, headers, url, None, body)
        except QwenhomeError as exc:
            return exc

    def _fail(self, r: Span, exc: BaseException, conn: _Conn | None = None) -> None:
        if conn is not None:
            self._close(conn)
        self.e._failed(r, exc)

    def _to_slow(self, r: Span) -> None:
        e = self.e
        with e._cv:
            e._drop(r)
            e._make_slow(r.item)

    def _retry_fresh(self, conn: _Conn, r: Span) -> None:
        self._close(conn)
        with self.e._cv:
            self.e._drop(r)  # handed out again at once, on a new connection

    def _check_stalls(self, now: float) -> None:
        e = self.e
        for conn in list(self.busy):
            limit = e.http.timeouts.connect if conn.state in (_CONNECTING, _HANDSHAKE) else e.cfg.stall_timeout
            if conn.r is not None and now - conn.last > limit:
                if conn.lowat > 1 and self._has_bytes(conn):
                    # Bytes came, fewer than the socket gathers (the link
                    # slowed after a burst): not a stall. Take them as they come.
                    self._lowat(conn, 1)
                    conn.last = now
                    continue
                host = conn.origin.host
                self._fail(conn.r, ReadTimeoutError(f"{conn.origin.authority} sent nothing for {limit:g} s",
                                                    code="response-timeout", host=host), conn)

    @staticmethod
    def _has_bytes(conn: _Conn) -> bool:
        try:
            waiting = bytearray(4)
            fcntl.ioctl(conn.sock.fileno(), termios.FIONREAD, waiting)
        except OSError:
            return False
        return int.from_bytes(waiting, sys.byteorder) > 0

    def _forget_idle(self, conn: _Conn) -> None:
        conns = self.idle.get(conn.origin, [])
        if conn in conns:
            conns.remove(conn)
        self._close(conn)

    def _close(self, conn: _Conn) -> None:
        self.busy.discard(conn)
        self.again.discard(conn)
        conn.r = None
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

