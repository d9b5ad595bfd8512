"""The engine's worker threads: one blocking keep-alive connection each, for
what the event loop does not take (TLS, proxies, and files the loop handed
over: a chunked body, a server that ignores ranges, an odd answer). A worker
asks the run (through its :class:`.port.Port`) for a range, fetches it
through :class:`HttpClient` (which follows redirects, classifies errors and
speaks to proxies), checks the answer against the metadata and moves the body
into place: spliced socket → file when it can, through a read buffer when not."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from typing import TYPE_CHECKING

from ..errors import ProtocolError, QwenhomeError, TransferInterrupted
from ..net import (
    ContentRange,
    Origin,
    Response,
    parse_count,
    raise_for_status,
    range_headers,
    strong_validator,
    token_for,
)
from ..store.cache import translate_os_error
from .pace import Pace
from .sizing import MiB
from .work import Item, Span

if TYPE_CHECKING:
    from .port import Port

log = logging.getLogger(__name__)

BUFFER = 1 * MiB  # bytes read (or spliced) per step: one lock round records them


def expired_signed_url(f: Item, url: str, status: int) -> TransferInterrupted | None:
    """A refusal from the CDN URL a redirect gave: it expired. The file goes
    back to resolving its candidate URL (a transient failure, retried)."""
    if status in (403, 404, 410) and f.direct_url and url == f.direct_url:
        f.direct_url = None
        return TransferInterrupted(f"signed URL for {f.name} expired (HTTP {status})")
    return None


class Workers:
    """The thread path of one engine; ``run(wid)`` is each thread's body."""

    def __init__(self, port: Port) -> None:
        self.e = port
        self.splice_ok = True  # cleared when the filesystem refuses splice
        self._local = threading.local()  # each thread's pipe or read buffer

    def run(self, wid: int) -> None:
        e = self.e
        while True:
            try:
                r = e.next_span(wid)
            except BaseException as exc:  # e.g. the partial file cannot be opened
                e.abort(exc)
                self._drop_pipe()
                return
            if r is None:
                self._drop_pipe()
                return
            try:
                self._fetch(r)
            except BaseException as exc:  # classified, never lost
                e.failed(r, exc)
            else:
                e.drop(r)

    def _fetch(self, r: Span) -> None:
        e = self.e
        f = r.item
        cand, url = f.send(r)  # (a failover may have come since the cut)
        token = token_for(cand.source.token, cand.source.url, url)
        headers = range_headers(f.base + r.start, f.base + r.end, f.validator)
        resp = e.http.open("GET", url, headers=headers, token=token, read_timeout=e.stall_timeout)
        try:
            self._check_response(r, resp, url)
            if resp.url != url and Origin.of(resp.url) != Origin.of(cand.url):
                f.direct_url = resp.url  # a signed CDN URL: skip the redirect next time
            e.answered(f)  # after direct_url: the other ranges go straight there
            if f.validator is None:
                f.validator = strong_validator(resp.header("ETag"))
            self._read_body(r, resp)
        finally:
            # Reuses the connection only when the body was read to its end
            # (a split range stops early and drops it).
            resp.release()

    def _check_response(self, r: Span, resp: Response, url: str) -> None:
        f = r.item
        size = f.size
        if resp.status == 206:
            value = resp.header("Content-Range") or ""
            cr = ContentRange.parse(value)
            if cr is None:
                raise ProtocolError(f"bad Content-Range {value!r} from {url}", code="bad-response")
            if cr.total != size and f.whole:
                raise ProtocolError(
                    f"{f.name}: source says {cr.total} bytes, metadata says {size}",
                    code="size-mismatch",
                    hint="the source serves a different file than it lists; another source will be tried",
                )
            if cr.first != f.base + r.start:
                raise ProtocolError(f"range mismatch from {url}", code="bad-response")
            return
        if resp.status == 200 and not f.whole:
            raise ProtocolError(f"{f.name}: the server ignored the range asked of {Origin.of(url).authority}",
                                code="bad-response")
        if resp.status == 200:
            length = resp.header("Content-Length")
            if length is not None and parse_count(length) != size:
                raise ProtocolError(
                    f"{f.name}: source sent {length} bytes, metadata says {size}",
                    code="size-mismatch",
                    hint="the source serves a different file than it lists; another source will be tried",
                )
            if r.start != 0 or r.end != size:
                self.e.restart(r, no_ranges=resp.header("Accept-Ranges") != "bytes")
            return
        expired = expired_signed_url(f, url, resp.status)
        if expired is not None:
            raise expired
        body = b""
        try:
            body = resp.read(1 << 16)
        except QwenhomeError as exc:  # the status alone still says what went wrong
            log.debug("body of the %d answer from %s not read (%s)", resp.status, url, exc)
        raise_for_status(resp.status, resp.headers, url, None, body)

    def _read_body(self, r: Span, resp: Response) -> None:
        """Read the range into place, stopping early if the range was split."""
        e = self.e
        f = r.item
        dest = f.dest
        pipe = self._pipe() if e.splice and self.splice_ok and dest.spliceable and resp.can_splice() else None
        mv = self._buffer() if pipe is None else None
        gen = r.gen
        _, pos, end = e.bounds(r)
        pace = Pace(e.clock())
        # One lock round per buffer: record what was written and learn whether
        # the range was split or cancelled meanwhile.
        while gen == f.gen and pos < end and not e.stopped and f.active:
            if pipe is not None:
                n = self._splice(resp, r, pos, min(BUFFER, end - pos), pipe)
            else:
                assert mv is not None
                n = resp.readinto(mv[: min(BUFFER, end - pos)])
                if n > 0 and not dest.put(mv, n, pos, r.gen):
                    return  # a duplicate of bytes now hashed, or the file is done
            if n < 0:
                return  # (the same, for spliced bytes: read and dropped)
            if n == 0:
                raise TransferInterrupted(f"{f.name}: body ended early at byte {pos}")
            pace.add(n)
            if pace.slow(e.clock(), e.min_rate):  # (each read returns what came: a trickle is seen)
                origin = Origin.of(resp.url)
                raise pace.error(origin.authority, origin.host, e.min_rate)
            recorded = e.record(r, pos, n, queue_hash=False)
            if recorded is None:
                return
            claimed, pos, end = recorded
            if claimed:
                e.hash_claimed(f)

    def _buffer(self) -> memoryview:
        """This worker's read buffer, made on first use: spliced bodies never
        need one, so many connections cost no memory."""
        buf: memoryview | None = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = memoryview(bytearray(BUFFER))
        return buf

    def _pipe(self) -> tuple[int, int]:
        """This worker's pipe for splice, sized to the read buffer."""
        pipe: tuple[int, int] | None = getattr(self._local, "pipe", None)
        if pipe is None:
            pipe = os.pipe()
            try:
                fcntl.fcntl(pipe[1], fcntl.F_SETPIPE_SZ, BUFFER)
            except (OSError, AttributeError) as exc:  # the default size only means more system calls
                log.debug("pipe size not raised to %d (%s)", BUFFER, exc)
            self._local.pipe = pipe
        return pipe

    def _drop_pipe(self) -> None:
        pipe: tuple[int, int] | None = getattr(self._local, "pipe", None)
        if pipe is not None:
            for end in pipe:
                os.close(end)
            self._local.pipe = None

    def _splice(self, resp: Response, r: Span, pos: int, want: int, pipe: tuple[int, int]) -> int:
        """Up to ``want`` bytes of the body into the file at ``pos``: how many,
        or -1 when the file's gate refused them (read and dropped)."""
        f = r.item
        dest = f.dest

        def land(data: bytes | None, n: int) -> bool:
            if data is None:
                return dest.drain(pipe[0], n, pos, r.gen)
            return dest.put(memoryview(data), n, pos, r.gen)

        try:
            return resp.splice_into(want, pipe, self.e.stall_timeout, land)
        except BaseException as exc:
            self._drop_pipe()  # it may hold bytes that never reached the file
            if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
                if exc.errno in (errno.EINVAL, errno.EBADF, errno.ENOSYS):
                    # This filesystem cannot take splice: plain reads from now on.
                    self.splice_ok = False
                    raise TransferInterrupted(f"{f.name}: splice unsupported here; retrying") from exc
                raise translate_os_error(exc, f.dest.path) from exc
            raise
