"""``--fix``: safe, user-level changes only, each reported as a FixApplied.

- put reachable sources first in qwenhome's config (``[[sources]]`` blocks are
  moved as text, so comments, unknown keys and tokens stay exactly as written);
- write the one-home exports to ``$QWEN_HOME/env.sh``.

System-level fixes (resolv.conf, wsl.conf, gai.conf) are never applied; the
checks print them as commands.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import stat
import sys
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

from ..config import CONFIG_FILENAME, Settings, Source
from ..errors import ConfigError
from .model import FixApplied

log = logging.getLogger(__name__)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_SOURCES_HEADER = re.compile(r"^\s*\[\[\s*sources\s*\]\]\s*(#.*)?$")
_ANY_HEADER = re.compile(r"^\s*\[")
STALE_CACHE_VARS = ("HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "PYTORCH_TRANSFORMERS_CACHE",
                    "PYTORCH_PRETRAINED_BERT_CACHE", "DIFFUSERS_CACHE")


def _atomic_write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _norm(url: str) -> str:
    return url.rstrip("/").lower()


def _split_blocks(text: str) -> tuple[list[str], list[int]]:
    """Lines of the file grouped into chunks; indices of the ``[[sources]]`` chunks."""
    chunks: list[str] = []
    source_idx: list[int] = []
    current: list[str] = []
    in_source = False
    for line in text.splitlines(keepends=True):
        if _ANY_HEADER.match(line):
            if current:
                chunks.append("".join(current))
                if in_source:
                    source_idx.append(len(chunks) - 1)
            current = []
            in_source = bool(_SOURCES_HEADER.match(line.rstrip("\r\n")))
        current.append(line)
    if current:
        chunks.append("".join(current))
        if in_source:
            source_idx.append(len(chunks) - 1)
    return chunks, source_idx


def _source_table(s: Source) -> str:
    # Tokens taken from the environment are not written to disk.
    return f"[[sources]]\nname = {json.dumps(s.name)}\nkind = {json.dumps(s.kind)}\nurl = {json.dumps(s.url)}\n"


def reorder_sources(settings: Settings, reachable: Collection[str]) -> FixApplied | None:
    """Move reachable sources (by name) before unreachable ones in the config.

    Returns None when nothing is to be done or the config's sources are not
    the ones in use (e.g. ``--source`` flags); raises ConfigError when the
    rewritten file would not parse back to the same sources.
    """
    sources = list(settings.sources)
    if len(sources) < 2 or sources[0].name in reachable or not any(s.name in reachable for s in sources):
        return None
    order = [i for i, s in enumerate(sources) if s.name in reachable]
    order += [i for i, s in enumerate(sources) if s.name not in reachable]
    path = settings.config_file or settings.state_dir / CONFIG_FILENAME
    try:
        text = path.read_text(encoding="utf-8")
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        text, mode = "", 0o600
    data: dict[str, Any] = tomllib.loads(text) if text else {}
    config_sources = data.get("sources")
    if isinstance(config_sources, list) and config_sources:
        urls = [_norm(str(item.get("url", ""))) for item in config_sources if isinstance(item, dict)]
        if urls != [_norm(s.url) for s in sources]:
            return None  # sources came from flags; the config is not what is in use
        chunks, idx = _split_blocks(text)
        if len(idx) != len(sources):
            return None
        blocks = [chunks[i] if chunks[i].endswith("\n") else chunks[i] + "\n" for i in idx]
        for slot, src in zip(idx, order, strict=True):
            chunks[slot] = blocks[src]
        new_text = "".join(chunks)
        expected = [config_sources[i] for i in order]
    else:
        tables = "\n".join(_source_table(sources[i]) for i in order)
        new_text = text + ("\n" if text and not text.endswith("\n") else "") + ("\n" if text else "") + tables
        expected = [{"name": sources[i].name, "kind": sources[i].kind, "url": sources[i].url} for i in order]
    try:
        check = tomllib.loads(new_text).get("sources")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"reordering sources in {path} would break it: {exc}", path=path) from exc
    if check != expected:
        raise ConfigError(f"reordering sources in {path} did not give the expected order; file left as is",
                          path=path)
    _atomic_write(path, new_text, mode)
    names = ", ".join(sources[i].name for i in order)
    return FixApplied("reorder-sources", f"sources reordered so that a reachable one is first: {names}",
                      str(path))


def _fallback_exports(settings: Settings) -> str:
    q = shlex.quote
    return (
        f"export QWEN_HOME={q(str(settings.home))}\n"
        f"export HF_HOME={q(str(settings.home))}\n"
        f"export HF_HUB_CACHE={q(str(settings.hub_cache))}\n"
        f"unset {' '.join(STALE_CACHE_VARS)}\n"
    )


def render_env_sh(settings: Settings, unset: Collection[str] = ()) -> str:
    try:
        from ..envexport import render_exports  # written by the lead; may not exist yet

        body = str(render_exports(settings, "bash"))
    except ImportError as exc:
        log.debug("exports written without envexport: %s", exc)
        body = _fallback_exports(settings)
    if not body.endswith("\n"):
        body += "\n"
    extra = f"unset {' '.join(sorted(unset))}\n" if unset else ""
    return ("# qwenhome: one model home for every library. Written by `qwenhome doctor --fix`.\n"
            "# Use it with:  . " + shlex.quote(str(settings.home / "env.sh")) + "\n" + body + extra)


def write_env_sh(settings: Settings, unset: Collection[str] = ()) -> FixApplied | None:
    path = settings.home / "env.sh"
    text = render_env_sh(settings, unset)
    try:
        if path.read_text(encoding="utf-8") == text:
            return None
    except OSError as exc:  # written anew below
        log.debug("%s not read: %s", path, exc)
    _atomic_write(path, text, 0o644)
    return FixApplied("write-env-sh", f"wrote the one-home exports; load them with `. {path}` "
                      "(add that line to ~/.bashrc)", str(path))
