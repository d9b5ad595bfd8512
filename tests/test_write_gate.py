"""A file's write gate (``transfer/gate.py``): a duplicate writer still under
way when the rest of the file is done (a xorb range the bridge also fetched,
a split range's old connection) never writes after the file is installed,
nor over bytes the hash has read. Real threads, real files, and the xorb
sink that failed a pull with "Bad file descriptor" before the gate."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

from qwenhome.transfer.files import FileJob, FileState
from qwenhome.transfer.gate import REFUSED, WriteGate
from qwenhome.transfer.partmap import Intervals
from qwenhome.transfer.xorbs import ChunkSink, Placement, Plan
from qwenhome.xet.compression import Policy
from qwenhome.xet.xorb import encode_chunk

KiB = 1024


def _file(tmp_path: Path, data: bytes) -> FileState:
    """A partial file holding ``data`` (all recorded), open."""
    job = FileJob(hashlib.sha256(data).hexdigest(), "model.bin", len(data), None, None, [],
                  tmp_path / "model.part")
    f = FileState.of(job, Intervals(), None)
    f.dest.open(len(data), fresh=True)
    f.dest.write(memoryview(data), len(data), 0)
    f.done.add(0, len(data))
    return f


def _sink_over(f: FileState, chunks: list[bytes]) -> tuple[ChunkSink, bytes]:
    """A xorb range whose chunks fill the whole file, and its raw bytes."""
    raw = b"".join(encode_chunk(c, Policy.NONE).blob for c in chunks)
    plan = Plan("x" * 64, "http://127.0.0.1/x", 0, len(raw) - 1, 0, len(chunks),
                (Placement(0, len(chunks), 0, sum(map(len, chunks))),))
    sink = ChunkSink(f, plan, {})
    sink.open(plan.size, fresh=False)
    return sink, raw


def test_a_xorb_range_still_decoding_after_the_file_is_installed_writes_nothing(tmp_path: Path) -> None:
    good = bytes(range(256)) * 256  # 64 KiB, two chunks
    f = _file(tmp_path, good)
    sink, raw = _sink_over(f, [b"\xee" * (32 * KiB)] * 2)  # a duplicate source serving wrong bytes
    f.install(lambda job: None)  # verified and handed to the store: the descriptor is closed
    assert f.dest.fd == -1
    sink.write(memoryview(raw), len(raw), 0)  # before the gate: error[store-io] … Bad file descriptor
    assert sink.commit()[1] == []  # nothing reported written
    assert (tmp_path / "model.part").read_bytes() == good
    f.dest.open(len(good), fresh=False)  # a late span cannot open it again either
    assert f.dest.fd == -1


def test_bytes_the_hash_reserved_are_not_overwritten_by_a_late_duplicate(tmp_path: Path) -> None:
    good = bytes(range(256)) * 256
    f = _file(tmp_path, good)
    sink, raw = _sink_over(f, [b"\xee" * (32 * KiB)] * 2)
    assert f.dest.gate.reserve(f.gen, 0, 48 * KiB)  # the hash is reading the first 48 KiB
    sink.write(memoryview(raw), len(raw), 0)
    on_disk = (tmp_path / "model.part").read_bytes()
    assert on_disk[:48 * KiB] == good[:48 * KiB]  # what the hash read stays what it read
    assert on_disk[48 * KiB:] == b"\xee" * (16 * KiB)  # the rest is not hashed yet: written
    assert sink.commit()[1] == [(48 * KiB, 64 * KiB)]
    f.dest.close()


def test_the_hash_waits_for_a_write_under_way_into_its_range() -> None:
    gate = WriteGate()
    at = gate.enter(0, 100, 200, whole=True)
    assert at == 100
    reserved = threading.Event()

    def hash_it() -> None:
        assert gate.reserve(0, 0, 150)
        reserved.set()

    t = threading.Thread(target=hash_it)
    t.start()
    assert not reserved.wait(0.3), "the hash read bytes a write was still changing"
    assert gate.reserve(0, 0, 50)  # (a range no write touches is not held up)
    gate.leave(at, 200)
    assert reserved.wait(5)
    t.join()
    assert gate.enter(0, 120, 260, whole=False) == 150  # later writes start above what was hashed
    assert gate.enter(0, 120, 260, whole=True) == REFUSED  # a plain span's duplicate ends instead


def _waits_for_a_write(gate: WriteGate, step: Callable[[], None], what: str) -> None:
    """``step`` (in a thread) does not return while a write is under way,
    and does once it ends."""
    at = gate.enter(0, 0, 10, whole=True)
    done = threading.Event()
    t = threading.Thread(target=lambda: (step(), done.set()))
    t.start()
    time.sleep(0.2)
    assert not done.is_set(), what
    gate.leave(at, 10)
    assert done.wait(5)
    t.join()


def test_new_bytes_refuse_the_old_generation_and_wait_for_its_writes() -> None:
    gate = WriteGate()
    _waits_for_a_write(gate, lambda: gate.renew(1), "the file was truncated under a write")
    assert gate.enter(0, 0, 10, whole=False) == REFUSED  # a span of the old bytes
    assert gate.enter(1, 0, 10, whole=False) == 0
    assert not gate.reserve(0, 0, 10)  # a hash of the old bytes is stale


def test_the_seal_waits_for_writes_under_way_then_refuses_all() -> None:
    gate = WriteGate()
    _waits_for_a_write(gate, gate.seal, "the file was closed under a write")
    assert gate.enter(0, 20, 30, whole=False) == REFUSED
