"""Which models other tools' caches on this machine hold (the doctor names
them so that ``qwenhome adopt`` can bring them in without a download).

- a hub cache (huggingface_hub's, another home's): its layout is this
  package's own (:mod:`.layout`);
- a ModelScope cache: ``models/{owner}--{name}/snapshots/...`` and the legacy
  ``hub/[models/]{owner}/{name}/`` (``.`` stored as ``___``).
"""

from __future__ import annotations

from pathlib import Path

from .layout import HubCache


def hub_cache_models(cache: Path) -> list[str]:
    """Ids of the models with at least one snapshot in the hub cache ``cache``."""
    hub = HubCache(cache)
    return [ref.repo_id for ref, _path in hub.repos() if ref.repo_type == "model" and hub.commits(ref)]


def modelscope_models(cache: Path) -> list[str]:
    """Ids of the models in the ModelScope cache ``cache`` (both layouts)."""
    out: list[str] = []
    new = cache / "models"
    if new.is_dir():
        for entry in sorted(new.iterdir()):
            if "--" in entry.name and (entry / "snapshots").is_dir():
                out.append(entry.name.replace("--", "/", 1))
    for legacy in (cache / "hub" / "models", cache / "hub"):
        if not legacy.is_dir():
            continue
        for org in sorted(legacy.iterdir()):
            if not org.is_dir() or org.name.startswith(".") or org.name == "models" or org.name.startswith("_"):
                continue
            for model in sorted(org.iterdir()):
                if model.is_dir() and (model / "config.json").is_file():
                    name = f"{org.name}/{model.name.replace('___', '.')}"
                    if name not in out:
                        out.append(name)
    return out
