"""Kept for callers outside the package: the manifest lives in :mod:`qwenhome.repo.manifest`."""

from .repo.manifest import Manifest, RepoFile, check_tree, listing_commit

__all__ = ["Manifest", "RepoFile", "check_tree", "listing_commit"]
