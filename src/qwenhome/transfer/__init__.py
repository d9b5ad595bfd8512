"""Ranged, parallel, resumable, verified file transfer."""

from .engine import Cancelled, EngineConfig, FileJob, TransferEngine, Tuning
from .work import Candidate

__all__ = ["Cancelled", "Candidate", "EngineConfig", "FileJob", "TransferEngine", "Tuning"]
