"""Ctrl+C while the CLI's modules load (a tenth of a second, more on a busy
machine) ends like Ctrl+C later: one ``error[interrupted]`` line and exit
130, not a KeyboardInterrupt traceback from deep inside an import.

Imported first by :mod:`qwenhome.cli`, which calls :func:`release` once its
imports are done; from then on Ctrl+C raises KeyboardInterrupt as usual."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

INTERRUPTED = "error[interrupted]: stopped by the user (hint: run the same command again to resume)"


def _stop(_signum: int, _frame: FrameType | None) -> None:
    try:
        sys.stderr.write(INTERRUPTED + "\n")
        sys.stderr.flush()
    finally:
        os._exit(130)


def guard() -> None:
    try:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # (not ignored, not the caller's own)
            signal.signal(signal.SIGINT, _stop)
    except ValueError:  # not the main thread: nothing to guard
        pass


def release() -> None:
    try:
        if signal.getsignal(signal.SIGINT) is _stop:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:
        pass


guard()
