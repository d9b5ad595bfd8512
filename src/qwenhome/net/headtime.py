"""A total bound on an HTTP head read line by line (``http.client``'s
response parser, ``http.server``'s request parser). The socket's time-out
bounds each wait for a byte, so a peer sending its head a byte at a time
would hold the reader forever. Here the head must be whole within a bound
of its first byte (a head that comes at once, after any wait up to the
time-out, is as before)."""

from __future__ import annotations

import functools
import http.client
import socket
import time
from collections.abc import Callable
from typing import Any

from ..errors import ReadTimeoutError


class HeadReader:
    """A buffered reader (``fp``, over ``sock``) while a head is read: each
    line is assembled from single socket reads, the socket's time-out cut to
    what is left of ``bound``; past it, ``late()`` is raised. Everything but
    ``readline`` goes to ``fp``."""

    def __init__(self, fp: Any, sock: socket.socket, bound: float, late: Callable[[], BaseException]) -> None:
        self.fp, self.sock, self.bound, self.late = fp, sock, bound, late
        self.read_timeout = sock.gettimeout()
        self.deadline: float | None = None  # set at the head's first byte

    def readline(self, limit: int = -1) -> bytes:
        out = bytearray()
        while limit < 0 or len(out) < limit:
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise self.late()
                self.sock.settimeout(min(left, self.read_timeout or left))
            try:
                ready = self.fp.peek(1)  # what is buffered, else one read of the socket
            except TimeoutError:
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    raise self.late() from None
                raise
            if not ready:
                break
            if self.deadline is None:
                self.deadline = time.monotonic() + self.bound
            end = ready.find(b"\n")
            take = end + 1 if end >= 0 else len(ready)
            if limit >= 0:
                take = min(take, limit - len(out))
            out += self.fp.read(take)
            if end >= 0 and end < take:
                break
        return bytes(out)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fp, name)

    def done(self) -> None:
        """The head is read: the socket's own time-out again."""
        self.sock.settimeout(self.read_timeout)


class BoundedHeadResponse(http.client.HTTPResponse):
    """An ``http.client`` response whose head must arrive whole within
    ``bound`` seconds of its first byte (``where``/``host`` name the server
    in the error). Made by :func:`bounded_head`."""

    bound = 30.0
    where = ""
    host = ""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self._head_sock = sock

    def begin(self) -> None:
        if self.headers is not None:  # (already begun)
            return
        fp = self.fp
        reader = HeadReader(fp, self._head_sock, self.bound, self._late)
        self.fp = reader  # type: ignore[assignment]
        try:
            super().begin()
        finally:
            if self.fp is reader:  # (None when the head said there is no body: the reader closed fp)
                self.fp = fp
            reader.done()

    def _late(self) -> ReadTimeoutError:
        return ReadTimeoutError(f"{self.where} did not send its answer's head within {self.bound:g} s",
                                code="response-timeout", host=self.host)


@functools.lru_cache(maxsize=256)
def bounded_head(bound: float, where: str, host: str) -> type[BoundedHeadResponse]:
    """The response class for one connection's requests (set as its ``response_class``)."""
    return type("BoundedHead", (BoundedHeadResponse,), {"bound": bound, "where": where, "host": host})
