"""The part map: merged intervals and their persistence."""

from __future__ import annotations

import random
from pathlib import Path

from qwenhome.transfer import partmap
from qwenhome.transfer.partmap import Intervals


def test_intervals_match_a_set_model_under_random_adds() -> None:
    rng = random.Random(7)
    for _ in range(200):
        size = rng.randint(1, 300)
        iv = Intervals()
        model: set[int] = set()
        for _ in range(rng.randint(0, 30)):
            s = rng.randint(0, size - 1)
            e = rng.randint(s, size)
            iv.add(s, e)
            model.update(range(s, e))
            assert iv.covered() == len(model)
            prefix = 0
            while prefix in model:
                prefix += 1
            assert iv.prefix() == prefix
            assert all(a < b for a, b in zip(iv.ends, iv.starts[1:], strict=False)), "merged and sorted"
            gap = iv.first_gap(0, size)
            missing = [i for i in range(size) if i not in model]
            if missing:
                assert gap is not None and gap[0] == missing[0]
                assert all(i not in model for i in range(gap[0], gap[1]))
                assert gap[1] == size or gap[1] in model
            else:
                assert gap is None
            a = rng.randint(0, size - 1)
            b = rng.randint(a, size)
            assert iv.covers(a, b) == all(i in model for i in range(a, b))


def test_map_round_trip_and_mismatch_is_ignored(tmp_path: Path) -> None:
    part = tmp_path / "x.part"
    part.write_bytes(b"\0" * 100)
    done = Intervals()
    done.add(0, 10)
    done.add(50, 60)
    partmap.save(part, "key", 100, done, '"etag"')
    loaded, validator = partmap.load(part, "key", 100)
    assert loaded.pairs() == [[0, 10], [50, 60]] and validator == '"etag"'
    assert partmap.load(part, "other", 100)[0].pairs() == [], "another file's map is never used"
    assert partmap.load(part, "key", 99)[0].pairs() == []
    partmap.map_path(part).write_text('{"key": "key", "size": 100, "done": [[0, 500], [-1, 3]]}')
    assert partmap.load(part, "key", 100)[0].pairs() == [], "out-of-range claims are dropped"
    partmap.discard(part)
    assert not part.exists() and not partmap.map_path(part).exists()


def test_tick_saves_skip_files_with_little_on_disk_but_forced_saves_take_all(tmp_path: Path) -> None:
    """A pull of many small files would rewrite hundreds of maps every tick:
    a file with less than ``map_min`` on disk waits until its unsaved bytes
    are ``map_age`` old (on a slow link they are worth keeping)."""
    import threading

    from qwenhome.transfer.files import FileJob, FileState
    from qwenhome.transfer.maps import PartMaps, Saving

    mib = 1 << 20
    now = [100.0]
    maps = PartMaps(threading.Lock(), lambda: now[0], Saving(min_bytes=4 * mib, age=1.0))
    states = []
    for name, size, have in [("small", 2 * mib, mib), ("big", 64 * mib, 8 * mib)]:
        job = FileJob(name, name, size, "0" * 64, None, [], tmp_path / f"{name}.part")
        job.partial.write_bytes(b"")
        f = FileState.of(job, Intervals([0], [have]), None)
        maps.touched(f, 0)  # its map is out of date since now
        states.append(f)
    maps.save(states)
    assert not partmap.map_path(tmp_path / "small.part").exists()
    assert partmap.map_path(tmp_path / "big.part").exists()
    assert maps.dirty == {states[0]}, "the small file's map is still due"
    now[0] += 1.5
    maps.save(states)
    assert partmap.map_path(tmp_path / "small.part").exists()
    partmap.map_path(tmp_path / "small.part").unlink()
    maps.touched(states[0], 0)
    maps.save(states, force=True)  # a cancelled or failed run keeps every byte it has
    assert partmap.map_path(tmp_path / "small.part").exists()
