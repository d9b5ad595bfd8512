"""Errors of the Xet format code, as leaves of qwenhome's one exception tree.

    QwenhomeError
    ├── StoreError
    │   └── IntegrityError
    │       └── XetCorruptError     xet-corrupt (a xorb's bytes fail a header, bound,
    │                               decompression, length or hash check)
    └── RemoteError
        └── ProtocolError
            └── XetAnswerError      xet-bad-reconstruction, xet-bad-token, xet-bad-hash,
                                    xet-bad-recipe (JSON or a hash string that breaks the spec)

A corrupt xorb is transient like every integrity error: the bytes are fetched
again (or from another source); a bad answer says the server is not speaking
Xet as the specification defines it.
"""

from __future__ import annotations

from ..errors import IntegrityError, ProtocolError


class XetCorruptError(IntegrityError):
    code = "xet-corrupt"
    default_hint = ("the xorb bytes are corrupt (in transit or at the source); they are fetched again, "
                    "and nothing unverified is kept")


class XetAnswerError(ProtocolError):
    code = "xet-bad-reconstruction"
    default_hint = ("the Xet server sent an answer that does not follow the Xet specification; "
                    "try again, or use another source (`qwenhome sources`)")
