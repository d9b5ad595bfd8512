"""qwenhome's log: ``-v``/``-vv`` on every command and ``QWENHOME_LOG`` put
the ``qwenhome`` logger's records on stderr; without them the output is what
it was. A failure the library swallows (here a manifest that cannot be read)
leaves a debug line instead of nothing."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pytest

from qwenhome.cli import build_parser
from qwenhome.config import log_level
from qwenhome.errors import ConfigError
from qwenhome.store import RepoRef, Store
from tests.support.cli import run_cli

COMMIT = "c" * 40


def _leaf_parsers(parser: argparse.ArgumentParser, name: str = "") -> dict[str, argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {name: parser}
    out: dict[str, argparse.ArgumentParser] = {}
    for sub in subs:
        for cmd, child in sub.choices.items():
            out.update(_leaf_parsers(child, f"{name} {cmd}".strip()))
    return out


def test_every_command_takes_verbose() -> None:
    leaves = _leaf_parsers(build_parser())
    assert {"pull", "path", "ls", "doctor", "mirror serve", "launch"} <= set(leaves)
    without = [name for name, p in leaves.items()
               if not {"-v", "--verbose"} <= {s for a in p._actions for s in a.option_strings}]
    assert without == []
    assert leaves["path"].parse_args(["Org/Name", "-vv"]).verbose == 2


def test_log_level_from_flags_and_environment() -> None:
    assert log_level({}) is None  # nothing asked: logging left as it is
    assert log_level({}, 1) == 20 and log_level({}, 2) == 10
    assert log_level({"QWENHOME_LOG": "DEBUG"}) == 10
    assert log_level({"QWENHOME_LOG": "warning"}, 1) == 20  # whichever says more
    with pytest.raises(ConfigError) as err:
        log_level({"QWENHOME_LOG": "loud"})
    assert err.value.code == "invalid-log-level"


def _snapshot_with_unreadable_manifest(home: Path) -> Path:
    store = Store(home / "hub", home / "qwenhome")
    ref = RepoRef.parse("Org/Name")
    data = b'{"model_type": "qwen2"}\n'
    etag = hashlib.sha256(data).hexdigest()
    blob = store.blob_path(ref, etag)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    store.link(ref, COMMIT, "config.json", etag)
    store.write_ref(ref, "main", COMMIT)
    manifest = store.manifest_path(ref, COMMIT)
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{not json")
    return store.snapshot_dir(ref, COMMIT)


def test_a_swallowed_failure_shows_at_debug_and_only_when_asked(tmp_path: Path) -> None:
    home = tmp_path / "home"
    snap = _snapshot_with_unreadable_manifest(home)

    quiet = run_cli(["path", "Org/Name"], home=home)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, f"{snap}\n", "")

    for args, env in ((["path", "Org/Name", "-vv"], {}), (["path", "Org/Name"], {"QWENHOME_LOG": "debug"})):
        loud = run_cli(args, home=home, env=env)
        assert (loud.returncode, loud.stdout) == (0, f"{snap}\n"), loud.stderr
        [line] = [x for x in loud.stderr.splitlines() if "qwenhome.store.cache" in x]
        assert " DEBUG qwenhome.store.cache [MainThread] manifest " in line and "not read" in line, line

    info = run_cli(["path", "Org/Name", "-v"], home=home)
    assert (info.returncode, info.stdout, info.stderr) == (0, f"{snap}\n", "")


def test_a_bad_log_level_is_one_clear_line(tmp_path: Path) -> None:
    res = run_cli(["ls"], home=tmp_path / "home", env={"QWENHOME_LOG": "loud"})
    assert res.returncode == 2
    assert res.stderr.startswith("error[invalid-log-level]: QWENHOME_LOG='loud' is not a log level (hint: ")
    assert len(res.stderr.splitlines()) == 1
