"""The offline demo: a tiny model built locally, served from a local mirror, pulled, launched."""

from .flow import DEMO_REPO, demo_repos_root, ensure_demo_model
from .labels import DEMO_IMAGE_REPO, demo_label
from .tinymodel import SYSTEM_PROMPT, TinySpec, build_tiny_qwen2

__all__ = ["DEMO_IMAGE_REPO", "DEMO_REPO", "SYSTEM_PROMPT", "TinySpec", "build_tiny_qwen2", "demo_label", "demo_repos_root", "ensure_demo_model"]
