"""The home: free disk, cache variables that disagree with it, models in
other caches, and switches that mislead (stray offline flag, hf_transfer)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..config import Settings
from ..errors import QwenhomeError
from ..repo.ref import RepoRef, etag_kind
from ..store.layout import HubCache
from ..store.othercaches import hub_cache_models, modelscope_models
from .model import Check, failed, passed, warned
from .options import DoctorOptions
from .sources import RepoSize

TRUE_VALUES = {"1", "on", "yes", "true"}


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _existing_ancestor(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _same(a: Path, b: Path) -> bool:
    # realpath: a home reached through a symlink (~/.cache -> /data/cache) is the same folder,
    # and its models are not "in another cache".
    return os.path.realpath(a) == os.path.realpath(b)


def _expand(env: Mapping[str, str], value: str) -> Path:
    if value.startswith("~"):
        value = env.get("HOME", "~") + value[1:]
    return Path(value).absolute()


def check_disk(settings: Settings, sizes: Sequence[RepoSize], opts: DoctorOptions) -> Check:
    check_id = "disk-space"
    where = _existing_ancestor(settings.hub_cache)
    try:
        free = shutil.disk_usage(where).free
    except OSError as exc:
        return warned(check_id, "disk-space-low", f"cannot read free space at {where}: {exc.strerror}",
                      "check that QWEN_HOME is on a mounted, readable disk")
    need = 0
    cache = HubCache(settings.hub_cache)
    for size in sizes:
        try:
            ref = RepoRef.parse(size.repo)
        except QwenhomeError:  # an odd repo id: count all of it
            need += size.total
            continue
        have = sum(n for etag, n in size.blobs if etag_kind(etag) and cache.has_blob(ref, etag))
        need += max(0, size.total - have)
    fix = (f"free space on the disk of {where}, or move the home to a larger disk: "
           "`export QWEN_HOME=/path/on/large/disk` (then `qwenhome adopt` the old store)")
    names = ", ".join(s.repo for s in sizes)
    if sizes and free < need:
        return failed(check_id, "disk-space-low",
                      f"{_human(free)} free at {where}, but pulling {names} needs {_human(need)}",
                      fix, free_bytes=str(free), needed_bytes=str(need))
    if not sizes and free < opts.min_free_bytes:
        return warned(check_id, "disk-space-low", f"only {_human(free)} free at {where}", fix,
                      free_bytes=str(free))
    what = f"; pulling {names} needs {_human(need)}" if sizes else ""
    return passed(check_id, f"{_human(free)} free at {where}{what}", free_bytes=str(free))


def check_cache_env(settings: Settings) -> Check:
    env = settings.env
    hub = settings.hub_cache
    wrong: list[str] = []
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var) and not _same(_expand(env, env[var]), hub):
            wrong.append(f"{var}={env[var]}")
    if env.get("HF_HOME") and not env.get("HF_HUB_CACHE") and not _same(_expand(env, env["HF_HOME"]) / "hub", hub):
        wrong.append(f"HF_HOME={env['HF_HOME']}")
    for var in ("TRANSFORMERS_CACHE", "PYTORCH_TRANSFORMERS_CACHE", "PYTORCH_PRETRAINED_BERT_CACHE",
                "DIFFUSERS_CACHE"):
        if env.get(var) and not _same(_expand(env, env[var]), hub):
            wrong.append(f"{var}={env[var]}")
    if not wrong:
        return passed("cache-env", f"cache variables agree with the home's store {hub}")
    env_sh = settings.home / "env.sh"
    return warned(
        "cache-env", "cache-env-mismatch",
        f"{', '.join(wrong)} disagree with the home's store {hub}: transformers, diffusers and "
        "huggingface_hub would download into another folder",
        f"use one home: `qwenhome doctor --fix` writes the exports to {env_sh}; then "
        f"`source {env_sh}` (and add that line to ~/.bashrc), or `eval \"$(qwenhome env)\"`",
        vars=", ".join(w.split("=", 1)[0] for w in wrong),
    )


def other_cache_dirs(settings: Settings, opts: DoctorOptions) -> tuple[list[Path], list[Path]]:
    """(hub-layout caches, ModelScope caches) other than the home's store."""
    env = settings.env
    home = Path(env.get("HOME") or env.get("USERPROFILE") or "~")
    if opts.hf_cache_dirs is not None:
        hf = list(opts.hf_cache_dirs)
    else:
        hf = [home / ".cache" / "huggingface" / "hub"]
        for var, sub in (("HF_HUB_CACHE", ""), ("HUGGINGFACE_HUB_CACHE", ""), ("HF_HOME", "hub"),
                         ("TRANSFORMERS_CACHE", "")):
            if env.get(var):
                hf.append(_expand(env, env[var]) / sub if sub else _expand(env, env[var]))
    if opts.modelscope_cache_dirs is not None:
        ms = list(opts.modelscope_cache_dirs)
    else:
        ms = [home / ".cache" / "modelscope"]
        if env.get("MODELSCOPE_CACHE"):
            ms.append(_expand(env, env["MODELSCOPE_CACHE"]))
    hf_unique: list[Path] = []
    for p in hf:
        if not _same(p, settings.hub_cache) and not any(_same(p, q) for q in hf_unique):
            hf_unique.append(p)
    return hf_unique, ms


def check_other_caches(settings: Settings, opts: DoctorOptions) -> Check:
    hf, ms = other_cache_dirs(settings, opts)
    # A model the home holds already is not downloaded again, wherever else it also is.
    have = set(hub_cache_models(settings.hub_cache))
    found: list[tuple[Path, list[str]]] = []
    for cache, models in [*((c, hub_cache_models(c)) for c in hf), *((c, modelscope_models(c)) for c in ms)]:
        missing = [m for m in models if m not in have]
        if missing:
            found.append((cache, missing))
    if not found:
        return passed("other-caches", "no models in other caches")
    listing = "; ".join(f"{path}: {', '.join(models[:5])}{' …' if len(models) > 5 else ''}"
                        for path, models in found)
    paths = " ".join(str(p) for p, _ in found)
    count = sum(len(m) for _, m in found)
    return warned(
        "other-caches", "models-in-other-cache",
        f"{count} model(s) sit in other caches and would be downloaded again: {listing}",
        f"bring them into the home without downloading (hard links): `qwenhome adopt {paths}`",
        paths=paths,
    )


def check_offline_flag(settings: Settings, online: bool | None) -> Check:
    env = settings.env
    set_vars = [v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
                if env.get(v, "").strip().lower() in TRUE_VALUES]
    if not set_vars:
        return passed("offline-flag", "HF_HUB_OFFLINE is not set")
    if online:
        return warned(
            "offline-flag", "offline-flag-set",
            f"{'='.join((set_vars[0], env[set_vars[0]]))} is set although a source is reachable: "
            "nothing will be downloaded, missing models fail",
            f"`unset {' '.join(set_vars)}` (and remove it from ~/.bashrc); qwenhome detects offline by itself",
            vars=" ".join(set_vars),
        )
    if online is None:
        return passed("offline-flag", f"{' '.join(set_vars)} set (whether a source is reachable was not checked)")
    return passed("offline-flag", f"{' '.join(set_vars)} set, and no source is reachable: offline is right")


def check_hf_transfer(settings: Settings) -> Check:
    value = settings.env.get("HF_HUB_ENABLE_HF_TRANSFER")
    if value is None:
        return passed("hf-transfer", "HF_HUB_ENABLE_HF_TRANSFER is not set")
    return warned(
        "hf-transfer", "deprecated-hf-transfer",
        f"HF_HUB_ENABLE_HF_TRANSFER={value} does nothing in current huggingface_hub (hf_transfer was "
        "replaced by hf_xet); it suggests a speed-up that does not happen",
        "`unset HF_HUB_ENABLE_HF_TRANSFER`; `qwenhome pull` downloads in parallel by itself, and for "
        "huggingface_hub use `export HF_XET_HIGH_PERFORMANCE=1`",
    )
