"""Deterministic repositories, generated fast, with their expected hashes.

Contents come from a 1 MiB random block per (seed, path); each 1 MiB chunk of a
file is that block rotated by a chunk-dependent amount and stamped with the
chunk index, so any two ranges of a file differ and a misplaced range is caught.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from qwenhome.mirror import git_blob_oid, lfs_pointer
from qwenhome.mirror.catalog import is_lfs_name

BLOCK = 1024 * 1024
MiB = BLOCK


@dataclass(frozen=True)
class ExpectedFile:
    path: str
    size: int
    sha256: str
    git_oid: str  # git blob oid of the content
    lfs: bool  # whether the mirror lists it as an LFS file

    @property
    def etag(self) -> str:
        """The blob name huggingface_hub and qwenhome give it in a store."""
        return self.sha256 if self.lfs else self.git_oid

    @property
    def blob_id(self) -> str:
        """The ``oid``/``blobId`` the Hub lists (the pointer's oid for LFS files)."""
        return git_blob_oid(lfs_pointer(self.sha256, self.size)) if self.lfs else self.git_oid


@dataclass(frozen=True)
class GeneratedRepo:
    root: Path  # the folder backend's root
    repo_id: str
    repo_type: str
    path: Path  # the repository folder
    files: dict[str, ExpectedFile]

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files.values())


def _seed_for(seed: int, path: str) -> int:
    return seed * 1_000_003 + zlib.crc32(path.encode())


def iter_content(size: int, seed: int, path: str = "") -> Iterator[bytes]:
    """The content of a generated file, in chunks of at most 1 MiB."""
    rng = random.Random(_seed_for(seed, path))
    if size <= BLOCK:
        yield rng.randbytes(size)
        return
    block = rng.randbytes(BLOCK)
    for index, start in enumerate(range(0, size, BLOCK)):
        k = (index * 7919 + 13) % BLOCK
        chunk = index.to_bytes(8, "big") + block[k + 8 :] + block[: k + 8] if k + 8 < BLOCK else block
        yield chunk[: min(BLOCK, size - start)]


def content(size: int, seed: int = 0, path: str = "") -> bytes:
    return b"".join(iter_content(size, seed, path))


def write_file(target: Path, data: int | bytes, seed: int = 0, relpath: str = "") -> ExpectedFile:
    """Write one file (generated when ``data`` is a size) and return its hashes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256()
    size = len(data) if isinstance(data, bytes) else data
    git = hashlib.sha1(b"blob %d\x00" % size)
    chunks: Iterator[bytes] = iter([data]) if isinstance(data, bytes) else iter_content(data, seed, relpath)
    with open(target, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
            sha.update(chunk)
            git.update(chunk)
    return ExpectedFile(relpath, size, sha.hexdigest(), git.hexdigest(), is_lfs_name(relpath, size))


def make_repo(
    root: Path, repo_id: str, files: Mapping[str, int | bytes], *, seed: int = 0,
    repo_type: str = "model",
) -> GeneratedRepo:
    """Create ``root/Org/Name/<files>`` (``root/datasets/Org/Name`` for datasets).

    ``files`` maps a repository path to a size (generated content) or to bytes.
    """
    base = root / "datasets" if repo_type == "dataset" else root
    folder = base / repo_id
    expected = {
        rel: write_file(folder / rel, data, seed, rel) for rel, data in files.items()
    }
    return GeneratedRepo(root, repo_id, repo_type, folder, expected)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(BLOCK):
            h.update(chunk)
    return h.hexdigest()


def make_store_repo(
    hub_cache: Path, repo: GeneratedRepo, *, commit: str = "c" * 40, ref: str = "main",
) -> Path:
    """Lay ``repo`` out as huggingface_hub would have cached it (blobs, snapshot
    symlinks, refs) under ``hub_cache``; returns the snapshot folder."""
    prefix = "datasets" if repo.repo_type == "dataset" else "models"
    repo_dir = hub_cache / f"{prefix}--{repo.repo_id.replace('/', '--')}"
    blobs, snap = repo_dir / "blobs", repo_dir / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    for rel, f in repo.files.items():
        blob = blobs / f.etag
        if not blob.exists():
            blob.write_bytes((repo.path / rel).read_bytes())
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (rel.count("/") + 2)) / "blobs" / f.etag)
    (repo_dir / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / ref).write_text(commit)
    return snap
