"""An event loop's connections: non-blocking sockets on one selector, kept
alive per origin, with their TLS handshakes, request sends and body reads.

Only socket mechanics live here; what a connection carries (which span,
what the answer means) is the loop's (:mod:`.evloop`).
"""

from __future__ import annotations

import fcntl
import selectors
import socket
import ssl
import sys
import termios
from collections.abc import Callable
from dataclasses import dataclass

from ..net import Origin
from ..net.steps import Address, resolve, start_connect, wrap_tls
from .pace import MinRate, Pace
from .sizing import KiB
from .work import Span

CONNECTING, HANDSHAKE, SENDING, HEAD, BODY = range(5)
TLS_RECORD = 40 * KiB  # what OpenSSL may hold of a body: never wait for the socket to gather it


@dataclass(frozen=True)
class Gather:
    """How much of a body the kernel gathers before it reports the socket
    (SO_RCVLOWAT), instead of at every segment: fewer, larger reads, so less
    CPU per byte when a server sends small pieces (a FastAPI server behind a
    shaper: loop CPU 1.9 -> 1.06 s for 1 GB)."""

    most: int = 256 * KiB  # at most this many bytes (0 turns gathering off)
    seconds: float = 0.25  # and no more than this long at the body's rate, so a slow link still shows life


class Conn:
    __slots__ = ("body_t", "got", "head", "keep", "last", "left", "lowat", "origin", "out", "pace", "r", "reused",
                 "sent", "sock", "state", "tls", "url")

    def __init__(self, sock: socket.socket, origin: Origin, now: float) -> None:
        self.sock = sock
        self.tls = origin.scheme == "https"  # sock becomes an SSLSocket once connected
        self.origin = origin
        self.state = CONNECTING
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
        self.pace = Pace(now)  # the current answer's bytes (head and body) in its rate window

    def set_lowat(self, n: int) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, n)
        self.lowat = n

    def gather(self, now: float, g: Gather) -> None:
        """Let the socket gather ``g.seconds`` of this body (at most ``g.most``)
        before select reports it. Never more than the body has brought so far
        (a first burst says little of a slow link's rate: the stall timer must
        not fire while bytes gather) nor than the bytes still to come (TLS:
        less a record's worth, which OpenSSL may hold), or the last ones would
        never be reported."""
        rate = self.got / max(now - self.body_t, 0.001)
        left = self.left - TLS_RECORD if self.tls else self.left
        want = max(1, min(g.most, int(rate * g.seconds), self.got, left))
        if want < self.lowat or want > 2 * self.lowat:
            self.set_lowat(want)

    def has_bytes(self) -> bool:
        """Bytes wait in the socket (fewer than it gathers, maybe)."""
        return self.waiting() > 0

    def waiting(self) -> int:
        """How many bytes wait in the socket, not yet read."""
        try:
            waiting = bytearray(4)
            fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, waiting)
        except OSError:
            return 0
        return int.from_bytes(waiting, sys.byteorder)

    def read_into(self, buf: memoryview, want: int) -> tuple[int, bool]:
        """Up to ``want`` body bytes into ``buf``: -1 when none is ready, 0 at
        the end of the stream; and whether OpenSSL holds more, already
        decrypted (one TLS record per read: read on until the socket has no
        more, or ``want`` is reached). Plain sockets too, for bodies that are
        decoded rather than spliced."""
        sock = self.sock
        got = 0
        try:
            while got < want:
                n = sock.recv_into(buf[got:want])
                if n == 0:
                    break
                got += n
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            if got == 0:
                return -1, False
        except ssl.SSLZeroReturnError:
            pass
        return got, bool(got and self.tls and sock.pending())  # type: ignore[attr-defined]


class Pool:
    """The connections of one loop: ``busy`` ones carry a span, ``idle`` ones
    wait per origin for the next; ``again`` are TLS connections with
    decrypted bytes that select cannot see."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.sel = selectors.DefaultSelector()
        self.busy: set[Conn] = set()
        self.idle: dict[Origin, list[Conn]] = {}
        self.addrs: dict[Origin, list[Address]] = {}
        self.again: set[Conn] = set()

    def take_idle(self, origin: Origin) -> Conn | None:
        conns = self.idle.get(origin)
        if not conns:
            return None
        conn = conns.pop()
        # (One opened ahead may have been closed by the server meanwhile, as a
        # pooled one: either is asked once more on a fresh connection.)
        conn.reused = True
        if conn.state == CONNECTING:  # opened ahead (adopt): its connect is watched from now on
            self.sel.register(conn.sock, selectors.EVENT_WRITE, conn)
        return conn

    def adopt(self, sock: socket.socket, origin: Origin, now: float) -> None:
        """A socket whose connect to ``origin`` began before the run: idle
        until a span takes it (unwatched until then: nothing to read yet)."""
        self.idle.setdefault(origin, []).append(Conn(sock, origin, now))

    def connect(self, origin: Origin, now: float) -> Conn:
        if origin not in self.addrs:
            self.addrs[origin] = resolve(origin.host, origin.port)  # blocking, but once per origin
        conn = Conn(start_connect(self.addrs[origin][0]), origin, now)
        self.sel.register(conn.sock, selectors.EVENT_WRITE, conn)
        return conn

    def next_address(self, origin: Origin) -> None:
        """This address failed: the next connection tries the host's next one
        (IPv6 then IPv4, say), as ``socket.create_connection`` would."""
        addrs = self.addrs.get(origin)
        if addrs and len(addrs) > 1:
            addrs.append(addrs.pop(0))

    def wrap(self, conn: Conn, context: ssl.SSLContext) -> None:
        """TCP is up: TLS over it (the client's context: its CA file, SNI, checks)."""
        self.sel.unregister(conn.sock)
        conn.sock = wrap_tls(conn.sock, context, conn.origin.host, handshake=False)
        conn.state = HANDSHAKE
        self.sel.register(conn.sock, selectors.EVENT_WRITE, conn)

    def handshake(self, conn: Conn) -> None:
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
        conn.last = self.clock()
        conn.state = SENDING
        self.send(conn)

    def send(self, conn: Conn) -> None:
        try:
            n = conn.sock.send(conn.out)
        except (BlockingIOError, ssl.SSLWantWriteError):
            n = 0
        except ssl.SSLWantReadError:  # TLS needs the peer's bytes first
            self.sel.modify(conn.sock, selectors.EVENT_READ, conn)
            return
        conn.out = conn.out[n:]
        if not conn.out:
            conn.state = HEAD
            conn.pace = Pace(self.clock())  # the answer's window starts once the request is out
            self.sel.modify(conn.sock, selectors.EVENT_READ, conn)
        else:
            self.sel.modify(conn.sock, selectors.EVENT_WRITE, conn)

    def pending(self, ready: list[tuple[selectors.SelectorKey, int]]) -> list[tuple[selectors.SelectorKey, int]]:
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

    def stalled(self, now: float, connect_limit: float, body_limit: float) -> list[tuple[Conn, float]]:
        """Busy connections silent past their limit, with it. Bytes waiting
        below what a socket gathers (the link slowed after a burst) are not a
        stall: the socket goes back to reporting every byte instead."""
        out = []
        for conn in list(self.busy):
            limit = connect_limit if conn.state in (CONNECTING, HANDSHAKE) else body_limit
            if conn.r is not None and now - conn.last > limit:
                if conn.lowat > 1 and conn.has_bytes():
                    conn.set_lowat(1)
                    conn.last = now
                    continue
                out.append((conn, limit))
        return out

    def slow(self, now: float, m: MinRate) -> list[Conn]:
        """Busy connections whose answer brought less than ``m``'s floor in
        a window (a trickle the stall check never sees). Bytes waiting below
        what a socket gathers count too (not read yet, but they came); when
        they make the floor, the socket goes back to reporting every byte and
        the window starts again."""
        out = []
        for conn in list(self.busy):
            if conn.r is not None and conn.state in (HEAD, BODY) and conn.pace.slow(now, m):
                if conn.lowat > 1 and conn.pace.n + conn.waiting() >= m.floor:
                    conn.set_lowat(1)
                    conn.pace = Pace(now)
                    continue
                out.append(conn)
        return out

    def park(self, conn: Conn) -> None:
        """``conn`` finished its span cleanly: it waits for its origin's next."""
        self.idle.setdefault(conn.origin, []).append(conn)

    def trim(self, keep: int) -> None:
        """Close idle connections beyond ``keep`` (the target shrank or work ran out)."""
        extra = sum(len(cs) for cs in self.idle.values()) - max(0, keep)
        for cs in self.idle.values():
            while cs and extra > 0:
                self.close(cs.pop())
                extra -= 1

    def forget_idle(self, conn: Conn) -> None:
        conns = self.idle.get(conn.origin, [])
        if conn in conns:
            conns.remove(conn)
        self.close(conn)

    def close(self, conn: Conn) -> None:
        self.busy.discard(conn)
        self.again.discard(conn)
        conn.r = None
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass  # never registered, or the socket is gone
        conn.sock.close()

    def close_all(self) -> None:
        for c in list(self.busy) + [c for cs in self.idle.values() for c in cs]:
            self.close(c)
        self.sel.close()
