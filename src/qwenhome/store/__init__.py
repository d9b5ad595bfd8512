"""The on-disk home: hub-cache layout, blobs, snapshots, refs, locks."""

from .cache import Store, atomic_write, translate_os_error
from .layout import (
    RepoRef,
    etag_kind,
    is_commit,
    parse_folder_name,
    validate_relpath,
    validate_revision,
)

__all__ = [
    "RepoRef",
    "Store",
    "atomic_write",
    "etag_kind",
    "is_commit",
    "parse_folder_name",
    "translate_os_error",
    "validate_relpath",
    "validate_revision",
]
