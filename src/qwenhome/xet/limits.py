"""The chunk sizes of the Xet specification (see ``chunking``), apart so that
the answer parsers and the xorb format can check them without loading numpy."""

from __future__ import annotations

MIN_CHUNK_SIZE = 8 * 1024
TARGET_CHUNK_SIZE = 64 * 1024
MAX_CHUNK_SIZE = 128 * 1024
