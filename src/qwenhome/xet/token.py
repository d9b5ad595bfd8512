"""The Xet token answer (specification: ``auth``).

``GET /api/{type}s/{repo}/xet-{read|write}-token/{revision}`` answers
``{"accessToken": str, "exp": unix seconds, "casUrl": str}``; stock clients
also read the same values from the headers ``X-Xet-Access-Token``,
``X-Xet-Token-Expiration`` and ``X-Xet-Cas-Url``. The token is a bearer token
for the CAS at ``casUrl``, scoped to one repository and revision; clients
refresh it some seconds before ``exp``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import _validate as v
from .errors import XetAnswerError

CODE = "xet-bad-token"

HEADER_ACCESS_TOKEN = "X-Xet-Access-Token"
HEADER_EXPIRATION = "X-Xet-Token-Expiration"
HEADER_CAS_URL = "X-Xet-Cas-Url"
HEADER_XET_HASH = "X-Xet-Hash"
LINK_REL_AUTH = "xet-auth"
LINK_REL_RECONSTRUCTION = "xet-reconstruction-info"

# Refresh this long before the expiry the server gave (the reference client uses 30 s).
REFRESH_MARGIN_S = 30


@dataclass(frozen=True)
class XetToken:
    access_token: str = field(repr=False)  # a secret: never in a repr, a log or an error
    exp: int
    cas_url: str

    def expires_within(self, now: float, margin: float = REFRESH_MARGIN_S) -> bool:
        """True when the token should be refreshed at ``now`` (unix seconds)."""
        return now >= self.exp - margin

    def to_json(self) -> dict[str, Any]:
        return {"accessToken": self.access_token, "exp": self.exp, "casUrl": self.cas_url}

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    def headers(self) -> dict[str, str]:
        return {HEADER_ACCESS_TOKEN: self.access_token, HEADER_EXPIRATION: str(self.exp),
                HEADER_CAS_URL: self.cas_url}

    @classmethod
    def from_json(cls, raw: bytes | str | Any) -> XetToken:
        """Parse a token answer; raises XetAnswerError (``xet-bad-token``)."""
        data = v.load_json(raw, "token answer", CODE)
        try:
            o = v.obj(data, "")
            token = v.text(v.field(o, "accessToken", ""), "accessToken")
            exp_raw = v.field(o, "exp", "")
            # JSON numbers: an integer, or a float that clients truncate to seconds.
            if isinstance(exp_raw, float) and exp_raw == exp_raw and 0 <= exp_raw < 2**63:
                exp_raw = int(exp_raw)
            exp = v.integer(exp_raw, "exp", hi=2**63 - 1)
            cas_url = v.http_url(v.field(o, "casUrl", ""), "casUrl")
        except v.Bad as exc:
            raise XetAnswerError(f"invalid Xet token answer: {exc}", code=CODE) from None
        return cls(token, exp, cas_url)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> XetToken | None:
        """The token carried in ``X-Xet-*`` headers, or None when they are absent."""
        lower = {k.lower(): val for k, val in headers.items()}
        names = (HEADER_ACCESS_TOKEN, HEADER_EXPIRATION, HEADER_CAS_URL)
        if not all(n.lower() in lower for n in names):
            return None
        exp = lower[HEADER_EXPIRATION.lower()].strip()
        if not (exp.isascii() and exp.isdigit()):
            raise XetAnswerError(f"invalid {HEADER_EXPIRATION} header: {exp[:40]!r}", code=CODE)
        return cls.from_json({"accessToken": lower[HEADER_ACCESS_TOKEN.lower()], "exp": int(exp),
                              "casUrl": lower[HEADER_CAS_URL.lower()]})
