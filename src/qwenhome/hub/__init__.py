"""Talking to sources: HTTP transport, the Hub protocol, ModelScope, errors."""

from .hf import HubClient
from .http import HttpClient, Origin, Response

__all__ = ["HttpClient", "HubClient", "Origin", "Response"]
