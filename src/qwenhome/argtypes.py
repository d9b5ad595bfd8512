"""Argument types shared by the command lines (``qwenhome`` and the app's
``python -m qwenhome.app.serve``): a number given as an option is plain
ASCII digits (with one point for a decimal); ``int()`` and ``float()`` also
take ``1_000``, other scripts' digits (``１２３``), signs, exponents, ``nan``
and surrounding space, which no option means."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

from .net.ranges import parse_count

_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


def decimal_value(text: str) -> float | None:
    """``text`` as a number when it is plain ASCII digits with at most one point, else None."""
    if len(text) > 40 or not _DECIMAL.fullmatch(text):
        return None
    return float(text)


def whole(lo: int, hi: int, note: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number in ``[lo, hi]`` in ASCII digits, else a usage error (exit 2)."""
    def parse(text: str) -> int:
        n = parse_count(text) if text == text.strip() else None
        if n is None or not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{text[:40]!r}: give a whole number from {lo} to {hi}{note}")
        return n
    return parse


def decimal(lo: float, hi: float, unit: str) -> Callable[[str], float]:
    """An argparse type: a number of ``unit`` in ``[lo, hi]`` (ASCII digits, one
    optional point), else a usage error (exit 2)."""
    def parse(text: str) -> float:
        n = decimal_value(text)
        if n is None or not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{text[:40]!r}: give a number of {unit} from {lo:g} to {hi:g}")
        return n
    return parse
