"""Argument types shared by the command lines (``qwenhome`` and the app's
``python -m qwenhome.app.serve``): a number given as an option is plain
ASCII digits; ``int()`` also takes ``1_000``, other scripts' digits
(``１２３``), signs and surrounding space, which no option means."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .net.ranges import parse_count


def whole(lo: int, hi: int, note: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number in ``[lo, hi]`` in ASCII digits, else a usage error (exit 2)."""
    def parse(text: str) -> int:
        n = parse_count(text) if text == text.strip() else None
        if n is None or not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{text[:40]!r}: give a whole number from {lo} to {hi}{note}")
        return n
    return parse
