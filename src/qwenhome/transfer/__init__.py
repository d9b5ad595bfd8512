"""Ranged, parallel, resumable, verified file transfer."""

from .engine import Cancelled, EngineConfig, FileJob, TransferEngine
from .work import Candidate

__all__ = ["Cancelled", "Candidate", "EngineConfig", "FileJob", "TransferEngine"]
