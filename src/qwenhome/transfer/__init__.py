"""Ranged, parallel, resumable, verified file transfer."""

from .engine import Cancelled, Candidate, EngineConfig, FileJob, TransferEngine

__all__ = ["Cancelled", "Candidate", "EngineConfig", "FileJob", "TransferEngine"]
