"""The mirror's Xet credentials: CAS access tokens and signed xorb URLs, both HMAC with a per-process key.

- An **access token** (the token route's ``accessToken``) names one
  repository and revision and an expiry; the CAS answers 401 to a missing,
  forged or expired one (clients then ask the token route again) and 403 to a
  file outside its repository.
- A **xorb URL** carries the byte ranges it authorizes
  (``X-Xet-Signed-Range=bytes=a-b,c-d``, as the Hub's do), an ``Expires``
  time and a ``Signature``; a request is refused (403) if the signature does
  not match, the URL expired, or its ``Range`` asks for a byte outside the
  signed ranges. No ``Authorization`` header is needed: the URL is the
  credential, like the Hub's CDN URLs.

A restart makes a new key: earlier tokens and URLs stop working, and clients
ask again, as they do when the Hub's expire.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from ...xet.reconstruction import ByteRange

TOKEN_PREFIX = "xetmirror1."
SIGNED_RANGE = "X-Xet-Signed-Range"
_RANGES_RE = re.compile(r"^bytes=(\d{1,18}-\d{1,18}(?:,\d{1,18}-\d{1,18})*)$")
MAX_RANGES = 4096  # per xorb URL; a xorb has at most 8192 chunks


class Refused(Exception):
    """A credential is refused: ``status`` (401 or 403) and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Scope:
    repo_type: str
    repo_id: str
    revision: str
    exp: int


def parse_ranges(header: str | None) -> list[tuple[int, int]] | None:
    """``bytes=a-b,c-d`` (ends inclusive, both given) as pairs; None when malformed or empty."""
    if not header:
        return None
    m = _RANGES_RE.match(header.strip().replace(" ", ""))
    if m is None:
        return None
    pairs = [(int(a), int(b)) for a, b in (p.split("-") for p in m.group(1).split(","))]
    if len(pairs) > MAX_RANGES or any(a > b for a, b in pairs):
        return None
    return pairs


def ranges_text(ranges: Sequence[ByteRange]) -> str:
    return "bytes=" + ",".join(f"{r.start}-{r.end}" for r in ranges)


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison of what a client sent (any characters) with what we computed."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


class Signer:
    def __init__(self, key: bytes | None = None, clock: Callable[[], float] = time.time) -> None:
        self._key = key or secrets.token_bytes(32)
        self._clock = clock

    def _mac(self, *parts: str) -> str:
        return hmac.new(self._key, "\x00".join(parts).encode(), "sha256").hexdigest()[:40]

    # -- access tokens -------------------------------------------------------------------
    def issue(self, repo_type: str, repo_id: str, revision: str, ttl: float) -> tuple[str, int]:
        """A token for one repository and revision, and its expiry (unix seconds)."""
        exp = int(self._clock() + ttl)
        payload = base64.urlsafe_b64encode(json.dumps([repo_type, repo_id, revision, exp]).encode()).decode()
        return f"{TOKEN_PREFIX}{payload}.{self._mac('token', payload)}", exp

    def check(self, authorization: str | None) -> Scope:
        """The scope of a valid ``Authorization: Bearer`` token; raises Refused (401) otherwise."""
        if not authorization or not authorization.startswith("Bearer "):
            raise Refused(401, "a Xet access token is required (Authorization: Bearer)")
        token = authorization[len("Bearer "):].strip()
        payload, _, mac = token.removeprefix(TOKEN_PREFIX).rpartition(".")
        if not token.startswith(TOKEN_PREFIX) or not _same(mac, self._mac("token", payload)):
            raise Refused(401, "invalid Xet access token")
        repo_type, repo_id, revision, exp = json.loads(base64.urlsafe_b64decode(payload))
        if self._clock() >= exp:
            raise Refused(401, "the Xet access token expired; ask the token route again")
        return Scope(repo_type, repo_id, revision, exp)

    # -- signed xorb URLs ----------------------------------------------------------------
    def sign(self, xorb: str, ranges: Sequence[ByteRange], ttl: float) -> str:
        """The query string of a URL for ``xorb`` that authorizes exactly ``ranges``."""
        text = ranges_text(ranges)
        exp = str(int(self._clock() + ttl))
        return urlencode({SIGNED_RANGE: text, "Expires": exp, "Signature": self._mac("xorb", xorb, text, exp)})

    def authorize(self, xorb: str, query: Mapping[str, list[str]], range_header: str | None) -> list[tuple[int, int]]:
        """The ranges a request on a xorb URL may have (those of its ``Range``); raises Refused (403)."""
        def one(name: str) -> str:
            values = query.get(name, [])
            if len(values) != 1:
                raise Refused(403, f"the xorb URL needs exactly one {name}")
            return values[0]

        text, exp, sig = one(SIGNED_RANGE), one("Expires"), one("Signature")
        if not _same(sig, self._mac("xorb", xorb, text, exp)):
            raise Refused(403, "invalid signature")
        if not (exp.isascii() and exp.isdigit()) or self._clock() >= int(exp):
            raise Refused(403, "the xorb URL expired; ask the reconstruction again")
        signed = parse_ranges(text) or []
        wanted = parse_ranges(range_header)
        if wanted is None:
            raise Refused(403, "a Range inside the URL's signed ranges is required")
        for a, b in wanted:
            if not any(s <= a and b <= e for s, e in signed):
                raise Refused(403, f"bytes {a}-{b} are outside the URL's signed ranges")
        return wanted
