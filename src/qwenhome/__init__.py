"""qwenhome: one model home for a local Qwen system."""

__version__ = "0.1.0"
