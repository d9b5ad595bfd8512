"""Xet hashes against the oracle: ``hf_xet.hash_files`` (the reference client's own code)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from qwenhome.xet.chunking import iter_chunks
from qwenhome.xet.errors import XetAnswerError
from qwenhome.xet.hashes import (
    ZERO_HASH,
    chunk_hash,
    file_hash,
    hash_to_hex,
    hex_to_hash,
    is_hash_hex,
)
from tests.support.xet_oracle import hf_xet_hashes
from tests.support.xet_spec import periodic_pattern

MB = 1_000_000


def _file_hash_hex(path: Path) -> str:
    with path.open("rb") as f:
        return hash_to_hex(file_hash((chunk_hash(c), len(c)) for c in iter_chunks(f, block_size=1 << 20)))


def _cases() -> dict[str, bytes]:
    rng = random.Random(23)
    cases = {f"random-{n}": rng.randbytes(n)
             for n in (0, 1, 8191, 8192, 8193, 65536, 131072, 131073, 3 * MB + 17)}
    cases["zeros-2MB"] = bytes(2 * MB)
    cases["zero-runs"] = rng.randbytes(100_000) + bytes(1 * MB) + rng.randbytes(70_000) + bytes(300_001)
    cases["periodic-no-match"] = periodic_pattern(matches=False, seed=1) * 20_000
    cases["periodic-match"] = periodic_pattern(matches=True, seed=2) * 20_000 + rng.randbytes(5)
    # Many chunks: the aggregation tree gets several levels.
    cases["many-chunks"] = periodic_pattern(matches=True, seed=5) * 100_000
    return cases


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("xet-hashes")
    out = {}
    for name, data in _cases().items():
        out[name] = root / name
        out[name].write_bytes(data)
    return out


def test_file_hashes_equal_hf_xet_at_every_edge(sample_files: dict[str, Path], tmp_path: Path) -> None:
    names = sorted(sample_files)
    oracle = hf_xet_hashes([sample_files[n] for n in names], tmp_path)
    ours = {n: _file_hash_hex(sample_files[n]) for n in names}
    assert ours == dict(zip(names, oracle, strict=True))


def test_empty_file_hash_is_all_zeros() -> None:
    assert file_hash([]) == ZERO_HASH


def test_hash_to_hex_reverses_each_8_byte_group() -> None:
    h = bytes(range(32))
    # The rule of the specification's api.md (its worked example drops the "10" of the third group).
    assert hash_to_hex(h) == "0706050403020100" "0f0e0d0c0b0a0908" "1716151413121110" "1f1e1d1c1b1a1918"
    assert hex_to_hash(hash_to_hex(h)) == h
    assert hex_to_hash(hash_to_hex(h).upper()) == h


def test_hex_to_hash_rejects_malformed_strings_with_a_code() -> None:
    for bad in ("", "00" * 31, "00" * 33, "zz" * 32, " " + "0" * 63, "0" * 63 + "\n", None, 5, b"0" * 64):
        with pytest.raises(XetAnswerError) as info:
            hex_to_hash(bad)  # type: ignore[arg-type]
        assert info.value.code == "xet-bad-hash"
        assert not is_hash_hex(bad)
