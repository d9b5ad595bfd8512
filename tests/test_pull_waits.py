"""A pull that waits for a blob another process is fetching, then finds it
placed, counts its bytes as already here (a pull of a repository four
processes fetched at once said '0 B downloaded, 0 B already here')."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from qwenhome.config import load_settings
from qwenhome.pull import PullResult, pull
from qwenhome.store import RepoRef, Store
from tests.support.mirror import Mirror
from tests.support.repos import GeneratedRepo


def test_a_blob_placed_by_another_process_meanwhile_counts_as_already_here(
        qwen_home: Path, mirror: Mirror, small_repo: GeneratedRepo) -> None:
    settings = load_settings({"HOME": str(qwen_home.parent), "HF_ENDPOINT": mirror.url}, home=str(qwen_home))
    store = Store(settings.hub_cache, settings.state_dir)
    ref = RepoRef.parse("Org/Small")
    theirs = small_repo.files["config.json"]
    lock = store.file_lock(theirs.etag)  # "another process" is fetching config.json
    assert lock.acquire()
    box: list[PullResult | BaseException] = []

    def run() -> None:
        try:
            box.append(pull(settings, ref))
        except BaseException as exc:  # handed to the test
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    others = [f for f in small_repo.files.values() if f.etag != theirs.etag]
    deadline = time.monotonic() + 60
    while not all(store.has_blob(ref, f.etag, f.size) for f in others):
        assert time.monotonic() < deadline and thread.is_alive(), box
        time.sleep(0.05)
    blob = store.blob_path(ref, theirs.etag)
    shutil.copyfile(small_repo.path / "config.json", blob)  # what the other process placed
    lock.release()
    thread.join(60)
    [result] = box
    assert isinstance(result, PullResult), result
    downloaded = sum({f.etag: f.size for f in others}.values())
    assert (result.downloaded_bytes, result.cached_bytes) == (downloaded, theirs.size)
