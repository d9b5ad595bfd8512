"""Text fields of request bodies.

JSON can carry lone UTF-16 surrogates (``"\\ud800"``), which Python decodes
into strings that are not text: no tokenizer takes them and no answer that
echoes them can be encoded as UTF-8. Fields typed :data:`Text` refuse them at
validation, so the request gets a 400 like any other invalid field.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def _valid_unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"not valid Unicode text (a lone surrogate at position {exc.start})") from exc
    return value


Text = Annotated[str, AfterValidator(_valid_unicode)]


def printable(value: str) -> str:
    """``value`` with anything UTF-8 cannot encode shown as escapes, for messages."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")
