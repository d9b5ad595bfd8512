"""Talking to sources: the Hub protocol and ModelScope, over :mod:`qwenhome.net`."""

from .hf import HubClient

__all__ = ["HubClient"]
