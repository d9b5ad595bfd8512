"""The Xet format, as the public Xet specification defines it (see docs/xet.md).

Modules, from the bottom:

- ``chunking``: content-defined chunking (gear hash, 8/64/128 KiB), in bulk;
- ``hashes``: chunk, xorb, file and term verification hashes; hash <-> hex;
- ``compression``: the chunk schemes (none, LZ4 frame, BG4-LZ4);
- ``xorb``: chunk headers, packing chunks into xorbs, decoding byte ranges;
- ``reconstruction``, ``token``: the CAS's and the Hub's JSON answers;
- ``recipe``: a file's terms; ``serving``: the answers a CAS gives from them;
- ``builder``: a local file to xorbs, file hash and recipe (with dedup).

Pure code: it reads the files it is given and nothing else, and imports only
qwenhome's errors.
"""

from __future__ import annotations

from .builder import (
    BuiltFile,
    ChunkIndex,
    build_file,
    build_stream,
    index_xorbs,
    xorb_folder_writer,
)
from .chunking import (
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    TARGET_CHUNK_SIZE,
    Chunker,
    chunk_lengths,
    iter_chunks,
)
from .compression import Policy, Scheme
from .errors import XetAnswerError, XetCorruptError
from .hashes import chunk_hash, file_hash, hash_to_hex, hex_to_hash, verification_hash, xorb_hash
from .recipe import FileRecipe
from .reconstruction import (
    ByteRange,
    ChunkRange,
    FetchInfo,
    MultiRangeFetch,
    RangeDescriptor,
    ReconstructionV1,
    ReconstructionV2,
    Term,
    parse_reconstruction,
)
from .serving import RangeNotSatisfiable, reconstruction_v1, reconstruction_v2
from .token import XetToken
from .xorb import (
    MAX_XORB_BYTES,
    MAX_XORB_CHUNKS,
    ChunkHeader,
    DecodedChunk,
    Xorb,
    XorbBuilder,
    XorbInfo,
)

__all__ = [
    "MAX_CHUNK_SIZE", "MAX_XORB_BYTES", "MAX_XORB_CHUNKS", "MIN_CHUNK_SIZE", "TARGET_CHUNK_SIZE",
    "BuiltFile", "ByteRange", "ChunkHeader", "ChunkIndex", "ChunkRange", "Chunker", "DecodedChunk", "FetchInfo",
    "FileRecipe", "MultiRangeFetch", "Policy", "RangeDescriptor", "RangeNotSatisfiable", "ReconstructionV1",
    "ReconstructionV2", "Scheme", "Term", "XetAnswerError", "XetCorruptError", "XetToken", "Xorb", "XorbBuilder",
    "XorbInfo", "build_file", "build_stream", "chunk_hash", "chunk_lengths", "file_hash", "hash_to_hex",
    "hex_to_hash", "index_xorbs", "iter_chunks", "parse_reconstruction", "reconstruction_v1", "reconstruction_v2",
    "verification_hash", "xorb_folder_writer", "xorb_hash",
]
