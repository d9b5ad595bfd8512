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

import importlib
from typing import TYPE_CHECKING, Any

# Submodules are imported when a name is first asked for (PEP 562): a
# program that only needs a token or a header constant does not load numpy,
# lz4 and blake3 (``qwenhome pull`` from a source without Xet never does).
if TYPE_CHECKING:
    from .builder import (
        BuiltFile,
        ChunkIndex,
        build_file,
        build_stream,
        index_xorbs,
        xorb_folder_writer,
    )
    from .chunking import Chunker, chunk_lengths, iter_chunks
    from .compression import Policy, Scheme
    from .errors import XetAnswerError, XetCorruptError
    from .hashes import (
        chunk_hash,
        file_hash,
        hash_to_hex,
        hex_to_hash,
        verification_hash,
        xorb_hash,
    )
    from .limits import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, TARGET_CHUNK_SIZE
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

_WHERE = {  # name -> the submodule that defines it
    "BuiltFile": "builder",
    "ChunkIndex": "builder",
    "build_file": "builder",
    "build_stream": "builder",
    "index_xorbs": "builder",
    "xorb_folder_writer": "builder",
    "MAX_CHUNK_SIZE": "limits",
    "MIN_CHUNK_SIZE": "limits",
    "TARGET_CHUNK_SIZE": "limits",
    "Chunker": "chunking",
    "chunk_lengths": "chunking",
    "iter_chunks": "chunking",
    "Policy": "compression",
    "Scheme": "compression",
    "XetAnswerError": "errors",
    "XetCorruptError": "errors",
    "chunk_hash": "hashes",
    "file_hash": "hashes",
    "hash_to_hex": "hashes",
    "hex_to_hash": "hashes",
    "verification_hash": "hashes",
    "xorb_hash": "hashes",
    "FileRecipe": "recipe",
    "ByteRange": "reconstruction",
    "ChunkRange": "reconstruction",
    "FetchInfo": "reconstruction",
    "MultiRangeFetch": "reconstruction",
    "RangeDescriptor": "reconstruction",
    "ReconstructionV1": "reconstruction",
    "ReconstructionV2": "reconstruction",
    "Term": "reconstruction",
    "parse_reconstruction": "reconstruction",
    "RangeNotSatisfiable": "serving",
    "reconstruction_v1": "serving",
    "reconstruction_v2": "serving",
    "XetToken": "token",
    "MAX_XORB_BYTES": "xorb",
    "MAX_XORB_CHUNKS": "xorb",
    "ChunkHeader": "xorb",
    "DecodedChunk": "xorb",
    "Xorb": "xorb",
    "XorbBuilder": "xorb",
    "XorbInfo": "xorb",
}


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


__all__ = [
    "MAX_CHUNK_SIZE", "MAX_XORB_BYTES", "MAX_XORB_CHUNKS", "MIN_CHUNK_SIZE", "TARGET_CHUNK_SIZE",
    "BuiltFile", "ByteRange", "ChunkHeader", "ChunkIndex", "ChunkRange", "Chunker", "DecodedChunk", "FetchInfo",
    "FileRecipe", "MultiRangeFetch", "Policy", "RangeDescriptor", "RangeNotSatisfiable", "ReconstructionV1",
    "ReconstructionV2", "Scheme", "Term", "XetAnswerError", "XetCorruptError", "XetToken", "Xorb", "XorbBuilder",
    "XorbInfo", "build_file", "build_stream", "chunk_hash", "chunk_lengths", "file_hash", "hash_to_hex",
    "hex_to_hash", "index_xorbs", "iter_chunks", "parse_reconstruction", "reconstruction_v1", "reconstruction_v2",
    "verification_hash", "xorb_folder_writer", "xorb_hash",
]
