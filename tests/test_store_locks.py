"""Per-blob lock files exist only while held, and removing them never lets
two holders in: a holder whose file was removed or replaced meanwhile locks
anew. (flock locks belong to an open file, so two FileLock objects of one
process exclude each other as two processes would.)"""

from __future__ import annotations

import threading
from pathlib import Path

from qwenhome.store.cache import FileLock, remove_stale_locks


def test_a_waiter_on_a_removed_lock_file_locks_anew_and_excludes_others(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "blob.lock"
    first, second, third = FileLock(path), FileLock(path), FileLock(path)
    assert first.acquire()
    got = threading.Event()
    waiter = threading.Thread(target=lambda: second.acquire(timeout=10) and got.set())
    waiter.start()
    assert not got.wait(0.3), "the second waits while the first holds"
    first.release()  # removes the file: the second's descriptor now names nothing
    waiter.join(10)
    assert got.is_set()
    assert path.exists(), "the second made the file anew and holds that"
    assert not third.acquire(timeout=0.2), "a newcomer must not get a lock the second holds"
    second.release()
    assert not path.exists()
    assert third.acquire(timeout=0) and path.exists()
    third.release(remove=False)
    assert path.exists()


def test_remove_stale_locks_keeps_the_held_ones(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "left-by-a-killed-pull.lock").touch()
    held = FileLock(locks / "in-use.lock")
    assert held.acquire()
    try:
        assert remove_stale_locks(locks) == ["left-by-a-killed-pull.lock"]
        assert sorted(p.name for p in locks.iterdir()) == ["in-use.lock"]
    finally:
        held.release()
    assert remove_stale_locks(locks) == [] and list(locks.iterdir()) == []
