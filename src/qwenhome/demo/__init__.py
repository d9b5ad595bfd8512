"""The offline demo: a tiny model built locally, served from a local mirror, pulled, launched."""

from .tinymodel import SYSTEM_PROMPT, TinySpec, build_tiny_qwen2

__all__ = ["SYSTEM_PROMPT", "TinySpec", "build_tiny_qwen2"]
