"""The bytes of a xorb range, made from the blob they come from: the body of a xorb answer.

A synthesized xorb is, chunk after chunk, an 8-byte header (version 0,
payload length = chunk length, scheme 0 "none", chunk length) and the chunk's
bytes, which lie in the blob at the offsets its record gives. Consecutive
chunks are usually consecutive in the blob too, so a run of them is read with
one ``preadv`` straight into the places between their headers in the output
buffer: one read and one send per MiB, whatever the chunk size.

:class:`XorbBody` is the whole HTTP body of one answer: one xorb range, or
several as ``multipart/byteranges`` parts.
"""

from __future__ import annotations

import bisect
import os
import secrets
import socket
from dataclasses import dataclass, field
from typing import BinaryIO

from ..hooks import BodyInterrupted, BodySlice
from ..sending import blocking
from .records import XorbLayout

_IOV_MAX = 1024
_BUFFER = 1 << 20


def fill(layout: XorbLayout, fd: int, pos: int, out: memoryview) -> None:
    """Write the xorb's bytes ``[pos, pos + len(out))`` into ``out``, reading ``fd`` (the blob, or
    the stored xorb); OSError if the file is short."""
    offsets, lengths, where = layout.info.offsets, layout.info.chunk_lengths, layout.blob_offsets
    if pos < 0 or pos + len(out) > offsets[-1]:
        raise ValueError("range outside the xorb")
    if layout.stored:
        if os.preadv(fd, [out], pos) != len(out):
            raise OSError("the stored xorb is shorter than its record says")
        return
    i = bisect.bisect_right(offsets, pos) - 1
    w, n = 0, len(out)
    iov: list[memoryview] = []
    run_start = run_end = -1

    def flush() -> None:
        if iov:
            want = sum(len(v) for v in iov)
            if os.preadv(fd, iov, run_start) != want:
                raise OSError("the blob is shorter than its record says")
            iov.clear()

    while w < n:
        head_end = offsets[i] + 8
        if pos < head_end:  # (part of) the chunk's header
            head = layout.header(i)[pos - offsets[i]:]
            take = min(len(head), n - w)
            out[w:w + take] = head[:take]
        else:  # (part of) the chunk's bytes, from the blob
            inner = pos - head_end
            take = min(lengths[i] - inner, n - w)
            at = where[i] + inner
            if at != run_end or len(iov) >= _IOV_MAX:
                flush()
                run_start = at
            iov.append(out[w:w + take])
            run_end = at + take
        w += take
        pos += take
        if pos == offsets[i + 1]:
            i += 1
    flush()


@dataclass(frozen=True)
class Segment:
    start: int  # first byte in the body
    length: int
    data: bytes = b""  # literal bytes (multipart framing) ...
    xorb_start: int = -1  # ... or a range of the xorb starting here


@dataclass
class XorbBody(BodySlice):
    """A xorb answer's body; ``file`` is the open blob (the caller closes it)."""

    layout: XorbLayout | None = None
    segments: list[Segment] = field(default_factory=list)

    def read_at(self, pos: int, n: int) -> bytes:
        n = max(0, min(n, self.length - pos))
        out = bytearray(n)
        view = memoryview(out)
        k = bisect.bisect_right([s.start for s in self.segments], pos) - 1
        w = 0
        while w < n:
            seg = self.segments[k]
            inner = pos + w - seg.start
            take = min(seg.length - inner, n - w)
            if seg.xorb_start < 0:
                view[w:w + take] = seg.data[inner:inner + take]
            else:
                assert self.layout is not None
                fill(self.layout, self.file.fileno(), seg.xorb_start + inner, view[w:w + take])
            w += take
            k += 1
        return bytes(out)

    def send(self, sock: socket.socket) -> int:
        """Send the whole body; returns the bytes sent, raises BodyInterrupted when cut short."""
        assert self.layout is not None
        buf = bytearray(min(_BUFFER, self.length))
        view = memoryview(buf)
        sent = 0
        fd = self.file.fileno()
        with blocking(sock):
            for seg in self.segments:
                try:
                    if seg.xorb_start < 0:
                        sock.sendall(seg.data)
                        sent += seg.length
                        continue
                    done = 0
                    while done < seg.length:
                        take = min(len(buf), seg.length - done)
                        fill(self.layout, fd, seg.xorb_start + done, view[:take])
                        sock.sendall(view[:take])
                        done += take
                        sent += take
                except OSError as exc:
                    raise BodyInterrupted(sent, str(exc) or type(exc).__name__) from exc
        return sent


def xorb_body(blob: BinaryIO, layout: XorbLayout, ranges: list[tuple[int, int]]) -> tuple[XorbBody, str]:
    """The body answering ``ranges`` (inclusive) of the xorb, and its Content-Type."""
    size = layout.info.size
    segments: list[Segment] = []
    pos = 0

    def add(length: int, data: bytes = b"", xorb_start: int = -1) -> None:
        nonlocal pos
        segments.append(Segment(pos, length, data, xorb_start))
        pos += length

    if len(ranges) == 1:
        a, b = ranges[0]
        add(b - a + 1, xorb_start=a)
        ctype = "application/octet-stream"
    else:
        boundary = secrets.token_hex(12)
        for a, b in ranges:
            head = (f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                    f"Content-Range: bytes {a}-{b}/{size}\r\n\r\n").encode()
            add(len(head), head)
            add(b - a + 1, xorb_start=a)
            add(2, b"\r\n")
        end = f"--{boundary}--\r\n".encode()
        add(len(end), end)
        ctype = f"multipart/byteranges; boundary={boundary}"
    return XorbBody(blob, 0, pos, pos, layout, segments), ctype


def send_xorb_body(sock: socket.socket, body: BodySlice) -> int:
    """The default writer of a xorb answer (a :data:`~qwenhome.mirror.hooks.BodyWriter`)."""
    if not isinstance(body, XorbBody):
        raise TypeError("not a xorb body")
    return body.send(sock)
