"""Which models in the home the system can serve, and as what.

A snapshot with a ``model_index.json`` naming a Qwen-Image pipeline is an
image model; one whose ``config.json`` names a causal language model
architecture is a chat model. Nothing else is servable here (an embedding
model, a dataset). Reads a few small JSON files per repository; no weights.

    for m in servable_models(settings): m.repo, m.kind, m.complete, m.snapshot
    m = find_servable(settings, "Org/Name")      # raises when it cannot be served
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import NotCachedError, QwenhomeError
from ..repo.ref import RepoRef
from ..store.cache import Store
from .errors import ApiError

log = logging.getLogger("qwenhome.app.servable")

CHAT_ARCHITECTURES = ("ForCausalLM", "LMHeadModel")
IMAGE_PIPELINES = ("QwenImage",)


@dataclass(frozen=True)
class Servable:
    repo: str
    kind: str  # "chat" or "image"
    snapshot: Path
    complete: bool  # False: files are missing; it cannot be served until pulled again


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.debug("%s not read: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def model_kind(snapshot: Path) -> str | None:
    """``image``, ``chat`` or None, from the snapshot's own description."""
    index = _json(snapshot / "model_index.json")
    if index is not None:
        name = str(index.get("_class_name", ""))
        return "image" if name.startswith(IMAGE_PIPELINES) else None
    config = _json(snapshot / "config.json")
    if config is None:
        return None
    archs = config.get("architectures") or []
    if isinstance(archs, list) and any(str(a).endswith(CHAT_ARCHITECTURES) for a in archs):
        return "chat"
    return None


def _servable(store: Store, ref: RepoRef) -> Servable | None:
    try:
        snap, complete = store.snapshot_path(ref), True
    except QwenhomeError:
        commit = store.resolve_commit(ref)
        commits = [commit] if commit else store.commits(ref)
        if not commits:
            return None
        snap, complete = store.snapshot_dir(ref, commits[-1]), False
    kind = model_kind(snap)
    return Servable(ref.repo_id, kind, snap, complete) if kind else None


def servable_models(settings: Settings) -> list[Servable]:
    """Every chat and image model in the home (complete or not), sorted by id."""
    store = Store(settings.hub_cache, settings.state_dir)
    out = []
    for ref, path in store.repos():
        if ref.repo_type != "model" or not path.is_dir():
            continue
        found = _servable(store, ref)
        if found is not None:
            out.append(found)
    return out


def find_servable(settings: Settings, repo: str, kind: str | None = None) -> Servable:
    """The complete model ``repo`` (``Org/Name[@rev]``) of ``kind``; raises a
    clear error when it is not in the home, incomplete, or not of that kind."""
    ref = RepoRef.parse(repo)
    store = Store(settings.hub_cache, settings.state_dir)
    if not store.repo_dir(ref).is_dir():
        raise NotCachedError(f"{ref} is not in the home ({store.root})", repo=str(ref),
                             hint=f"pull it first: the page's Models panel, POST /api/models/pull, or `qwenhome pull {ref}`")
    found = _servable(store, ref)
    if found is None or (kind is not None and found.kind != kind):
        what = f"a {kind} model" if kind else "a chat or image model"
        raise ApiError(400, f"{ref} is not {what} this server can serve", code="model-not-servable",
                       hint="chat models have a config.json with a causal LM architecture; image models a "
                            "Qwen-Image model_index.json (GET /api/served lists what can be served)", repo=str(ref))
    if not found.complete:
        store.snapshot_path(ref)  # raises snapshot-incomplete, naming a missing file
    return found
