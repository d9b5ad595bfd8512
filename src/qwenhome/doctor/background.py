"""Daemon threads with a bounded wait.

``concurrent.futures`` joins its workers at interpreter exit, so one
``getaddrinfo`` stuck in the C library would hold the process open; the
doctor's calls run in daemon threads and are simply abandoned at the deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Pending(Generic[T]):
    def __init__(self, fn: Callable[[], T], name: str = "doctor") -> None:
        self._done = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc
        finally:
            self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(max(0.0, timeout))

    def result(self, timeout: float) -> T:
        """The value, or the exception ``fn`` raised; TimeoutError if not done in time."""
        if not self._done.wait(max(0.0, timeout)):
            raise TimeoutError
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]
