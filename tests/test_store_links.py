"""The store remembers the folders it made (a pull links hundreds of files into
a few): that memory must not break when the folders go away meanwhile, as
they do when a long-running process (the app, the mirror) removes a repo."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from qwenhome.store import RepoRef, Store

COMMIT = "a" * 40
ETAG = "b" * 64


def test_link_and_install_survive_their_folders_being_removed(tmp_path: Path) -> None:
    store = Store(tmp_path / "hub", tmp_path / "state")
    ref = RepoRef.parse("Org/Name")
    for round_ in range(2):
        partial = tmp_path / f"partial-{round_}"
        partial.write_bytes(b"weights")
        blob = store.install_blob(ref, ETAG, partial)
        link = store.link(ref, COMMIT, "sub/model.safetensors", ETAG)
        assert blob.read_bytes() == b"weights"
        assert not os.path.isabs(os.readlink(link)) and link.resolve() == blob.resolve()
        shutil.rmtree(store.repo_dir(ref))  # what `rm` does, between two pulls of one process
    assert not store.repo_dir(ref).exists()


def test_link_replaces_a_link_to_another_blob(tmp_path: Path) -> None:
    store = Store(tmp_path / "hub", tmp_path / "state")
    ref = RepoRef.parse("Org/Name")
    first = store.link(ref, COMMIT, "config.json", ETAG)
    again = store.link(ref, COMMIT, "config.json", "c" * 64)
    assert first == again and os.readlink(again).endswith("c" * 64)
