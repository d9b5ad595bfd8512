"""``--demo`` for images: the tiny Qwen-Image pipeline, built locally once,
served from a local Hub-protocol mirror on 127.0.0.1 and pulled into the home
through the real pull path, exactly like the demo's chat model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config import Settings, Source
from ..errors import NotCachedError
from ..progress import EventSink
from ..store.cache import Store
from ..store.layout import RepoRef
from .tiny import TINY_REPO_ID


def ensure_demo_image_model(
    settings: Settings,
    *,
    on_event: EventSink | None = None,
    say: Callable[[str], None] = lambda _msg: None,
) -> Path:
    """The tiny image model's snapshot in the home, building and pulling it if missing."""
    from ..demo.flow import demo_repos_root
    from ..mirror import FolderBackend, MirrorServer
    from ..pull import pull

    ref = RepoRef.parse(TINY_REPO_ID)
    try:
        return Store(settings.hub_cache, settings.state_dir).snapshot_path(ref)
    except NotCachedError:
        pass
    folder = demo_repos_root(settings) / TINY_REPO_ID
    if not (folder / "model_index.json").is_file():
        from .tiny import build_tiny_qwenimage

        say(f"building the demo image model (a tiny Qwen-Image pipeline) in {folder}")
        build_tiny_qwenimage(folder)
    server = MirrorServer(FolderBackend(demo_repos_root(settings))).start()
    try:
        say(f"serving it from a local mirror at {server.url}; pulling it into the home")
        mirror = settings.with_sources([Source("demo-mirror", "hf", server.url)]).with_offline(False)
        result = pull(mirror, ref, on_event=on_event)
    finally:
        server.stop()
    return result.snapshot
