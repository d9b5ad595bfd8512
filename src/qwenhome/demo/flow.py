"""The demo's way into the home: build the tiny model once, serve it from a
local Hub-protocol mirror, and pull it through the real pull path.

Everything happens on 127.0.0.1; a home that has the demo model already
returns at once without building, serving or pulling anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ..config import Settings, Source
from ..errors import NotCachedError
from ..progress import EventSink
from ..repo.ref import RepoRef
from ..store.cache import Store

log = logging.getLogger(__name__)

DEMO_REPO = "qwenhome/tiny-qwen2-demo"


def demo_repos_root(settings: Settings) -> Path:
    """Plain repository folders (``Org/Name/``) the demo mirror serves."""
    return settings.state_dir / "demo-repos"


def ensure_demo_repo(
    settings: Settings,
    repo_id: str,
    marker: str,
    build: Callable[[Path], object],
    what: str,
    *,
    on_event: EventSink | None = None,
    say: Callable[[str], None] = lambda _msg: None,
) -> Path:
    """The snapshot of demo repository ``repo_id`` in the home. When missing:
    ``build`` it once into the demo folders (unless ``marker`` is there
    already), serve those from a local mirror on 127.0.0.1, and pull it
    through the real pull path."""
    from ..mirror import FolderBackend, MirrorServer
    from ..pull import pull

    ref = RepoRef.parse(repo_id)
    try:
        return Store(settings.hub_cache, settings.state_dir).snapshot_path(ref)
    except NotCachedError as exc:
        log.debug("%s: %s; making the demo repository", repo_id, exc.message)
    folder = demo_repos_root(settings) / repo_id
    if not (folder / marker).is_file():
        say(f"building {what} in {folder}")
        build(folder)
    server = MirrorServer(FolderBackend(demo_repos_root(settings))).start()
    try:
        say(f"serving it from a local mirror at {server.url}; pulling it into the home")
        mirror_settings = settings.with_sources([Source("demo-mirror", "hf", server.url)]).with_offline(False)
        result = pull(mirror_settings, ref, on_event=on_event)
    finally:
        server.stop()
    return result.snapshot


def ensure_demo_model(
    settings: Settings,
    *,
    on_event: EventSink | None = None,
    say: Callable[[str], None] = lambda _msg: None,
) -> Path:
    """The demo chat model's snapshot in the home, building and pulling it if missing."""
    from .tinymodel import build_tiny_qwen2

    return ensure_demo_repo(settings, DEMO_REPO, "model.safetensors", build_tiny_qwen2,
                            "the demo model (a tiny Qwen2, trained locally)", on_event=on_event, say=say)
