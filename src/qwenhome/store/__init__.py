"""The on-disk home: hub-cache layout, blobs, snapshots, refs, locks."""

from ..repo.ref import RepoRef, etag_kind, is_commit, validate_relpath, validate_revision
from .cache import Store, atomic_write, translate_os_error
from .layout import HubCache, folder_name, parse_folder_name

__all__ = [
    "HubCache",
    "RepoRef",
    "Store",
    "atomic_write",
    "etag_kind",
    "folder_name",
    "is_commit",
    "parse_folder_name",
    "translate_os_error",
    "validate_relpath",
    "validate_revision",
]
