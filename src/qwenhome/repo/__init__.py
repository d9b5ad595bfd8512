"""The bottom layer: what a repository is, independent of where it comes from
or where it is kept.

- :mod:`.ref`: :class:`RepoRef` and the validators every revision, blob name
  and file path from outside passes;
- :mod:`.manifest`: the files a snapshot holds (:class:`Manifest`,
  :class:`RepoFile`) and the commit id derived from a listing;
- :mod:`.hashing`: the hashes that name and verify content (:class:`Verifier`).

It imports nothing of qwenhome but :mod:`qwenhome.errors`; the store, the
sources (``hub``) and the transfer all build on it.
"""

from .hashing import Verifier, git_blob_header, hash_file
from .manifest import Manifest, RepoFile, check_tree, listing_commit
from .ref import (
    DEFAULT_REVISION,
    REPO_TYPES,
    RepoRef,
    etag_kind,
    is_commit,
    validate_etag,
    validate_relpath,
    validate_revision,
)

__all__ = [
    "DEFAULT_REVISION",
    "REPO_TYPES",
    "Manifest",
    "RepoFile",
    "RepoRef",
    "Verifier",
    "check_tree",
    "etag_kind",
    "git_blob_header",
    "hash_file",
    "is_commit",
    "listing_commit",
    "validate_etag",
    "validate_relpath",
    "validate_revision",
]
