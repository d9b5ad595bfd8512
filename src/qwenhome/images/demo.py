"""``--demo`` for images: the tiny Qwen-Image pipeline, built locally once,
served from a local Hub-protocol mirror on 127.0.0.1 and pulled into the home
through the real pull path, exactly like the demo's chat model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config import Settings
from ..progress import EventSink
from .tiny import TINY_REPO_ID


def ensure_demo_image_model(
    settings: Settings,
    *,
    on_event: EventSink | None = None,
    say: Callable[[str], None] = lambda _msg: None,
) -> Path:
    """The tiny image model's snapshot in the home, building and pulling it if missing."""
    from ..demo.flow import ensure_demo_repo
    from .tiny import build_tiny_qwenimage

    return ensure_demo_repo(settings, TINY_REPO_ID, "model_index.json", build_tiny_qwenimage,
                            "the demo image model (a tiny Qwen-Image pipeline)", on_event=on_event, say=say)
