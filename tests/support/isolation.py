"""Keeps the test suite out of the real home of whoever runs it (a pytest plugin).

Three layers, loaded by ``tests/conftest.py`` (``pytest_plugins``):

* At ``pytest_configure``, before any test module imports huggingface_hub,
  transformers or diffusers (they freeze their cache paths at import), HOME and
  every home or cache variable those libraries and qwenhome read point into one
  temporary folder for the whole session; subprocesses inherit it. Tokens and
  endpoints from the user's environment are dropped.
* An audit hook (``sys.addaudithook``) refuses, with :class:`WriteOutsideTemp`
  (a ``PermissionError``), every write by the test process outside the allowed
  roots (the temp folders, ``/dev``, ``/proc``, ``__pycache__``), and records it: the test
  that made it fails even if the code under test swallowed the error.
* Before and after each test, the real home's cache folders are listed
  (entries, sizes, mtimes); a change made during a test by any process (a
  subprocess that ignored HOME) fails that test.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Home and cache variables, relative to the session's temporary folder. Every library
# the suite drives (huggingface_hub, hf_xet, transformers, diffusers, torch,
# ModelScope, hypothesis, Chromium via XDG) derives its paths from these.
REDIRECTED: dict[str, str] = {
    "HOME": "home",
    "USERPROFILE": "home",
    "XDG_CACHE_HOME": "home/.cache",
    "XDG_CONFIG_HOME": "home/.config",
    "XDG_DATA_HOME": "home/.local/share",
    "XDG_STATE_HOME": "home/.local/state",
    "QWEN_HOME": "qwen-home",
    "HF_HOME": "home/.cache/huggingface",
    "HF_HUB_CACHE": "home/.cache/huggingface/hub",
    "HUGGINGFACE_HUB_CACHE": "home/.cache/huggingface/hub",
    "HF_ASSETS_CACHE": "home/.cache/huggingface/assets",
    "HF_XET_CACHE": "home/.cache/huggingface/xet",
    "HF_DATASETS_CACHE": "home/.cache/huggingface/datasets",
    "HF_MODULES_CACHE": "home/.cache/huggingface/modules",
    "HF_TOKEN_PATH": "home/.cache/huggingface/token",
    "TRANSFORMERS_CACHE": "home/.cache/huggingface/hub",
    "TORCH_HOME": "home/.cache/torch",
    "MODELSCOPE_CACHE": "home/.cache/modelscope",
    "HYPOTHESIS_STORAGE_DIRECTORY": "home/.cache/hypothesis",
}
# Older spellings that would win over the above if the user has them set, and
# the user's tokens and endpoints (tests talk only to 127.0.0.1 with their own).
DROPPED = ("PYTORCH_TRANSFORMERS_CACHE", "PYTORCH_PRETRAINED_BERT_CACHE", "DIFFUSERS_CACHE",
           "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "MODELSCOPE_ENDPOINT",
           "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
# Modules that freeze cache paths at import: imported earlier, they would keep the real ones.
FREEZING_MODULES = ("huggingface_hub", "transformers", "diffusers", "modelscope", "torch")

# Folders of the real home that caching libraries write to, relative to it.
REAL_CACHE_DIRS = (".cache/huggingface", ".cache/modelscope", ".cache/torch", ".cache/qwenhome",
                   ".config/qwenhome", ".huggingface", ".qwenhome")
WATCH_DEPTH = 4  # hub/models--Org--Name/refs/main: deep enough for every cache write

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class WriteOutsideTemp(PermissionError):
    """A write by a test outside the temporary folders, refused by the guard."""


def real_home(env: Mapping[str, str]) -> Path:
    """The home of whoever runs the suite, as seen before the session isolated it."""
    home = env.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
    return Path(home).resolve()


def isolate_environment(env: dict[str, str], root: Path) -> Path:
    """Point every home and cache variable of ``env`` into ``root``; return the fake home."""
    for name, rel in REDIRECTED.items():
        env[name] = str(root / rel)
    for name in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        Path(env[name]).mkdir(parents=True, exist_ok=True)
    for name in DROPPED:
        env.pop(name, None)
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    return Path(env["HOME"])


def watched_dirs(env: Mapping[str, str], home: Path) -> list[Path]:
    """The real caches to watch: the usual folders under the real home, and any cache
    variable the user had set (it may point elsewhere)."""
    dirs = [home / rel for rel in REAL_CACHE_DIRS]
    dirs += [Path(env[name]).expanduser() for name in REDIRECTED
             if name not in ("HOME", "USERPROFILE") and env.get(name)]
    out: list[Path] = []
    for d in dirs:
        d = d.resolve()
        if d not in out:
            out.append(d)
    return out


def snapshot(dirs: Iterable[Path], home: Path) -> dict[str, tuple[int, int]]:
    """``{path: (mtime_ns, size)}`` of every entry down to WATCH_DEPTH under ``dirs``, and
    the names directly in the real home, ``.cache`` and ``.config`` (new folders there)."""
    out: dict[str, tuple[int, int]] = {}
    for top in (home, home / ".cache", home / ".config"):
        try:
            names = os.listdir(top)
        except OSError:
            continue
        out.update({str(top / n): (0, 0) for n in names})

    def walk(path: Path, depth: int) -> None:
        try:
            st = os.lstat(path)
        except OSError:
            return
        out[str(path)] = (st.st_mtime_ns, st.st_size)
        if depth < WATCH_DEPTH and stat.S_ISDIR(st.st_mode):
            try:
                names = os.listdir(path)
            except OSError:
                return
            for n in names:
                walk(path / n, depth + 1)

    for d in dirs:
        walk(d, 0)
    return out


def diff(before: Mapping[str, tuple[int, int]], after: Mapping[str, tuple[int, int]]) -> list[str]:
    changes = [f"created {p}" for p in after if p not in before]
    changes += [f"removed {p}" for p in before if p not in after]
    # Directory mtimes change with their entries, which are listed themselves.
    changes += [f"modified {p}" for p, v in after.items()
                if p in before and before[p] != v and not os.path.isdir(p)]
    return sorted(changes)


@dataclass
class WriteGuard:
    """The audit hook's state. ``active`` is set only while a test runs (setup to
    teardown); collection and pytest's own bookkeeping are not checked."""

    allowed: list[str]
    active: bool = False
    violations: list[str] = field(default_factory=list)
    _busy: threading.local = field(default_factory=threading.local)

    def allows(self, path: str) -> bool:
        if "__pycache__" in Path(path).parts:
            return True  # byte-code the interpreter caches beside any module
        return any(path == root or path.startswith(root + os.sep) for root in self.allowed)

    def _resolve(self, path: Any, dir_fd: Any, *, follow: bool) -> str | None:
        if isinstance(path, int) or path is None:
            return None  # an already-open descriptor: its open was checked
        path = os.fsdecode(path)
        if isinstance(dir_fd, int) and dir_fd >= 0 and not os.path.isabs(path):
            path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
        path = os.path.abspath(path)
        if follow:
            return os.path.realpath(path)
        # The entry itself is changed (removed, renamed, created): resolve its folder only.
        return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))

    def _targets(self, event: str, args: tuple[Any, ...]) -> list[str | None]:
        r = self._resolve
        if event == "open":
            path, _mode, flags = args
            return [r(path, None, follow=True)] if flags & _WRITE_FLAGS else []
        if event in ("os.mkdir", "os.remove", "os.rmdir", "os.mkfifo", "os.mknod"):
            return [r(args[0], args[-1], follow=False)]
        if event in ("os.rename", "os.link"):
            return [r(args[0], args[2], follow=False), r(args[1], args[3], follow=False)][
                1 if event == "os.link" else 0:]
        if event == "os.symlink":
            return [r(args[1], args[2], follow=False)]
        if event in ("os.chmod", "os.chown", "os.utime"):
            return [r(args[0], args[-1], follow=True)]
        if event == "os.truncate":
            return [r(args[0], None, follow=True)]
        if event in ("shutil.copyfile", "shutil.copytree", "shutil.move", "shutil.copymode",
                     "shutil.copystat"):
            return [r(args[1], None, follow=False)] + (
                [r(args[0], None, follow=False)] if event == "shutil.move" else [])
        if event == "shutil.rmtree":
            return [r(args[0], args[1], follow=False)]
        if event == "shutil.unpack_archive":
            return [r(args[1], None, follow=True)]
        if event == "sqlite3.connect":
            db = args[0]
            return [] if db in (":memory:", b":memory:", "") else [r(db, None, follow=True)]
        return []

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        __tracebackhide__ = True
        if not self.active or event not in WATCHED_EVENTS or getattr(self._busy, "on", False):
            return
        self._busy.on = True
        try:
            bad = [p for p in self._targets(event, args) if p is not None and not self.allows(p)]
        finally:
            self._busy.on = False
        if bad:
            msg = f"{event} {', '.join(bad)}: a test wrote outside the temporary folders"
            self.violations.append(msg)
            raise WriteOutsideTemp(msg)


WATCHED_EVENTS = frozenset({
    "open", "os.mkdir", "os.remove", "os.rmdir", "os.rename", "os.link", "os.symlink", "os.mkfifo",
    "os.mknod", "os.chmod", "os.chown", "os.utime", "os.truncate", "shutil.copyfile", "shutil.copytree",
    "shutil.move", "shutil.copymode", "shutil.copystat", "shutil.rmtree", "shutil.unpack_archive",
    "sqlite3.connect",
})


@dataclass
class Isolation:
    """What the session set up; ``tests/conftest.py`` exposes it as the ``isolated_home`` fixture."""

    root: Path
    home: Path
    real_home: Path
    watched: list[Path]
    guard: WriteGuard
    saved_env: dict[str, str]
    before: dict[str, tuple[int, int]] = field(default_factory=dict)


_state: Isolation | None = None
_hook_installed: WriteGuard | None = None


def state() -> Isolation:
    assert _state is not None, "tests.support.isolation was not configured"
    return _state


def pytest_configure(config: pytest.Config) -> None:
    global _state, _hook_installed
    early = [m for m in FREEZING_MODULES if m in sys.modules]
    if early:
        raise pytest.UsageError(
            f"{', '.join(early)} imported before the test home was isolated: its cache paths "
            "would point at the real home (import it inside tests or fixtures, not in a plugin)")
    saved = dict(os.environ)
    home_before = real_home(saved)
    root = Path(tempfile.mkdtemp(prefix="qwenhome-tests-")).resolve()
    env = dict(os.environ)
    home = isolate_environment(env, root)
    os.environ.clear()
    os.environ.update(env)
    # (/proc: process controls such as a child's clear_refs for peak-memory checks, not files)
    allowed = {str(root), os.path.realpath(tempfile.gettempdir()), "/dev", "/proc"}
    if config.option.basetemp:
        allowed.add(os.path.realpath(config.option.basetemp))
    guard = WriteGuard(sorted(allowed))
    if _hook_installed is None:  # an audit hook cannot be removed: install one per process
        sys.addaudithook(_dispatch)
    _hook_installed = guard
    _state = Isolation(root, home, home_before, watched_dirs(saved, home_before), guard, saved)


def _dispatch(event: str, args: tuple[Any, ...]) -> None:
    __tracebackhide__ = True
    if _hook_installed is not None:
        _hook_installed.hook(event, args)


def pytest_unconfigure(config: pytest.Config) -> None:
    global _state
    if _state is None:
        return
    _state.guard.active = False
    os.environ.clear()
    os.environ.update(_state.saved_env)
    shutil.rmtree(_state.root, ignore_errors=True)
    _state = None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    s = state()
    s.guard.violations.clear()
    s.before = snapshot(s.watched, s.real_home)
    s.guard.active = True
    try:
        return (yield)
    finally:
        s.guard.active = False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Turn a write outside the temp folders into a failure of the phase (setup,
    call, teardown) in which it was seen, and a change in the real home (listed
    once per test, after teardown) into a failure of the teardown."""
    report = yield
    s = state()
    problems = list(s.guard.violations)
    s.guard.violations.clear()
    if call.when == "teardown":
        changes = diff(s.before, snapshot(s.watched, s.real_home))
        if changes:
            problems.append(f"the real home {s.real_home} changed during this test (a process "
                            "ignored HOME or a cache variable, or another program wrote there): "
                            + "; ".join(changes[:10]))
    if problems and not report.failed:
        report.outcome = "failed"
        report.longrepr = "\n".join(["this test touched the real home or wrote outside the temp folders:",
                                     *problems])
    elif problems:
        report.sections.append(("real home / writes outside temp", "\n".join(problems)))
    return report
