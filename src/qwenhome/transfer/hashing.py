"""Kept so existing imports work: the verifier lives in :mod:`qwenhome.repo.hashing`."""

from ..repo.hashing import Verifier

__all__ = ["Verifier"]
