"""Interoperability with the reference client: hf_xet uploads what we read, and downloads what we build.

hf_xet runs in a subprocess against a minimal CAS on 127.0.0.1
(``tests/support/xet_oracle.py``); nothing here reaches another host.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np

from qwenhome.xet.builder import build_stream, index_xorbs
from qwenhome.xet.chunking import iter_chunks as file_chunks
from qwenhome.xet.compression import Policy
from qwenhome.xet.hashes import (
    chunk_hash,
    file_hash,
    hash_to_hex,
    hex_to_hash,
    verification_hash,
    xorb_hash,
)
from qwenhome.xet.xorb import iter_chunks, read_headers
from tests.support.xet_oracle import oracle_cas, run_hf_xet


def _floats(n: int, seed: int) -> bytes:
    return (np.random.default_rng(seed).standard_normal(n) * 0.02).astype(np.float32).tobytes()


def _text(n_words: int, seed: int) -> bytes:
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 8))) for _ in range(400)]
    return " ".join(rng.choice(words) for _ in range(n_words)).encode()


def test_xorbs_uploaded_by_hf_xet_decode_and_hash_here(tmp_path: Path) -> None:
    files = {"weights.bin": _floats(400_000, 1), "text.txt": _text(200_000, 2),
             "random.bin": random.Random(3).randbytes(700_000)}
    paths = []
    for name, data in files.items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    with oracle_cas() as (url, state):
        hashes = run_hf_xet({"op": "upload", "paths": [str(p) for p in paths], "endpoint": url}, tmp_path)
    assert state.uploaded_xorbs and state.shards
    schemes: set[int] = set()
    stored: dict[bytes, bytes] = {}
    for name, body in state.uploaded_xorbs.items():
        schemes |= {h.scheme for h in read_headers(body)}
        chunks = [c.data for c in iter_chunks(body)]
        assert hash_to_hex(xorb_hash((chunk_hash(c), len(c)) for c in chunks)) == name
        stored.update((chunk_hash(c), c) for c in chunks)
    assert schemes == {0, 1, 2}  # hf_xet chose none, LZ4 and BG4-LZ4: we read all three
    shard = b"".join(state.shards)
    for (name, data), reported in zip(files.items(), hashes, strict=True):
        ours = [(chunk_hash(c), len(c)) for c in file_chunks(io.BytesIO(data))]
        assert hash_to_hex(file_hash(ours)) == reported
        assert b"".join(stored[h] for h, _ in ours) == data, name
        assert hex_to_hash(reported) in shard
        # Each file is one term of one xorb here: its verification hash is the one hf_xet put in the shard.
        assert verification_hash(h for h, _ in ours) in shard, name


def test_hf_xet_downloads_files_built_here(tmp_path: Path) -> None:
    rng = random.Random(4)
    old = _floats(300_000, 5) + _text(100_000, 6) + rng.randbytes(600_000) + bytes(300_000)
    new = old[:700_000] + b"edited" * 500 + old[700_000:1_500_000] + rng.randbytes(40_000) + old[1_540_000:]
    with oracle_cas() as (url, state):
        first = build_stream(io.BytesIO(old), state.add_xorb, policy=Policy.AUTO, max_xorb_chunks=12)
        second = build_stream(io.BytesIO(new), state.add_xorb, policy=Policy.AUTO,
                              known=index_xorbs(first.new_xorbs))
        assert {h.scheme for _, data in state.xorbs.values() for h in read_headers(data)} == {0, 1, 2}
        for built in (first, second):
            state.recipes[built.file_hash] = built.recipe
        jobs = [[first.file_hash, first.size, str(tmp_path / "old.bin")],
                [second.file_hash, second.size, str(tmp_path / "new.bin")]]
        # Multi-range fetching is off by default in hf_xet 1.8; on, it reads multipart/byteranges.
        run_hf_xet({"op": "download", "endpoint": url, "files": jobs}, tmp_path,
                   env={"HF_XET_CLIENT_ENABLE_MULTIRANGE_FETCHING": "true"})
        assert (tmp_path / "old.bin").read_bytes() == old
        assert (tmp_path / "new.bin").read_bytes() == new
        assert any("," in rng_header for _, _, rng_header in state.requests)  # a multi-range fetch
        assert not any("/v1/" in path for _, path, _ in state.requests)

        state.v2 = False  # an older CAS: hf_xet falls back to v1
        run_hf_xet({"op": "download", "endpoint": url,
                    "files": [[second.file_hash, second.size, str(tmp_path / "new-v1.bin")]]}, tmp_path)
        assert (tmp_path / "new-v1.bin").read_bytes() == new
        assert any(path.startswith("/v1/reconstructions/") for _, path, _ in state.requests)
