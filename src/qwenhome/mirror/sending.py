"""Writing response bodies to a client's socket: file slices by ``sendfile``, built bodies in large writes.

The socket is made blocking for the body, so that one system call moves a
large piece with the GIL released (non-blocking, each socket buffer's worth
would cost a wake-up and a GIL hand-off: slow first bytes for everyone at 32
clients). The connection's time-out becomes the kernel's send time-out
meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Iterator

from .hooks import BodyInterrupted, BodySlice


@contextlib.contextmanager
def blocking(sock: socket.socket) -> Iterator[None]:
    """The socket blocking, with its time-out as the kernel's send time-out, until the block ends."""
    timeout = sock.gettimeout()
    sock.settimeout(None)
    if timeout:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                        struct.pack("ll", int(timeout), int(timeout % 1 * 1e6)))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)


def sendfile_body(sock: socket.socket, body: BodySlice) -> int:
    """Send ``body`` (a slice of a file) with ``os.sendfile``; returns the bytes sent."""
    out_fd, in_fd = sock.fileno(), body.file.fileno()
    offset, remaining, sent = body.offset, body.length, 0
    with blocking(sock):
        while remaining > 0:
            try:
                n = os.sendfile(out_fd, in_fd, offset, min(remaining, 1 << 30))
            except BlockingIOError:
                raise BodyInterrupted(sent, "send timed out") from None
            except OSError as exc:
                raise BodyInterrupted(sent, str(exc)) from exc
            if n == 0:
                raise BodyInterrupted(sent, "file shrank while sending")
            offset += n
            remaining -= n
            sent += n
    return sent
