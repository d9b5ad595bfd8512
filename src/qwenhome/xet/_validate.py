"""Checks for JSON that a Xet server sent: every failure is one XetAnswerError with a path.

Parsing hostile JSON must never raise KeyError, TypeError or a traceback; these
helpers read a field, check its type and bounds, and name where it failed
(``terms[3].range.end``) so that the one-line error says what was wrong.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from .errors import XetAnswerError
from .hashes import is_hash_hex

U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1
MAX_URL_LEN = 64_000  # the specification's bound for accessToken and casUrl


class Bad(Exception):
    """Raised inside a parser with the path of the bad field; turned into XetAnswerError at the edge."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path}: {why}" if path else why)


def load_json(raw: bytes | str | Any, what: str, code: str) -> Any:
    """Decode ``raw`` if it is text/bytes; objects already decoded pass through."""
    if not isinstance(raw, bytes | bytearray | str):
        return raw
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise XetAnswerError(f"{what} is not valid JSON: {str(exc)[:120]}", code=code) from exc


def obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Bad(path, f"expected an object, got {type(value).__name__}")
    return value


def field(o: dict[str, Any], key: str, path: str) -> Any:
    if key not in o:
        raise Bad(f"{path}.{key}" if path else key, "missing")
    return o[key]


def integer(value: Any, path: str, *, lo: int = 0, hi: int = U64_MAX) -> int:
    # bool is an int in Python, and a float like 3.0 is not an integer in JSON's sense here.
    if isinstance(value, bool) or not isinstance(value, int):
        raise Bad(path, f"expected an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise Bad(path, f"{value} outside {lo}..{hi}")
    return value


def array(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise Bad(path, f"expected an array, got {type(value).__name__}")
    return value


def hash_hex(value: Any, path: str) -> str:
    if not is_hash_hex(value):
        raise Bad(path, f"expected a hash of 64 hex digits, got {str(value)[:80]!r}")
    return str(value).lower()


def http_url(value: Any, path: str) -> str:
    """An absolute http(s) URL of bounded length (never file:, ftp:, or a relative path)."""
    if not isinstance(value, str) or not value:
        raise Bad(path, "expected a URL string")
    if len(value) > MAX_URL_LEN:
        raise Bad(path, f"URL longer than {MAX_URL_LEN} characters")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise Bad(path, f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise Bad(path, f"expected an http(s) URL, got {value[:80]!r}")
    if any(c in value for c in "\r\n\x00"):
        raise Bad(path, "URL holds control characters")
    return value


def text(value: Any, path: str, *, max_len: int = MAX_URL_LEN) -> str:
    if not isinstance(value, str) or not value:
        raise Bad(path, "expected a non-empty string")
    if len(value) > max_len:
        raise Bad(path, f"longer than {max_len} characters")
    return value
