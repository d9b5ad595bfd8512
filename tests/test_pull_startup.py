"""A pull's start-up: connections opened while the listing is asked (the
first ranges go out on them, those unused are closed), and the transfer
engine loaded meanwhile rather than before."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from qwenhome.net import Origin
from qwenhome.pull import pull
from qwenhome.store import RepoRef
from qwenhome.transfer.preconnect import Preconnect
from tests.support.mirror import Mirror
from tests.support.repos import GeneratedRepo
from tests.test_pull import FAST, assert_snapshot_matches, settings_for

WEIGHTS = "model.safetensors"
LISTING = "/api/models/Org/Small/revision/main"


def test_the_first_ranges_go_out_on_connections_opened_during_the_listing(
        qwen_home: Path, mirror: Mirror, small_repo: GeneratedRepo) -> None:
    """The listing takes 0.4 s to answer: a range of the weights is asked on a
    connection the server accepted before that answer, not on one opened
    after it (each new connection costs a round trip on a real link)."""
    accepted: dict[int, float] = {}
    faults = mirror.faults
    faults.on_connect = lambda cid: accepted.setdefault(cid, time.monotonic())  # type: ignore[method-assign]
    faults.latency(0.4, times=1, path=LISTING)
    pull(settings_for(qwen_home, mirror.url), RepoRef.parse("Org/Small"), config=FAST)
    assert_snapshot_matches(qwen_home, small_repo)
    listed = max(r.ended for r in faults.records(path=LISTING))
    gets = faults.records(path=WEIGHTS, method="GET")
    assert gets, "the weights were fetched"
    early = [r for r in gets if accepted.get(r.connection_id, listed) < listed - 0.2]
    assert early, [(r.connection_id, round(listed - accepted.get(r.connection_id, 0), 3)) for r in gets]


def test_connections_not_taken_are_closed() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        warm = Preconnect(Origin("http", "127.0.0.1", server.getsockname()[1]), count=3)
        server.settimeout(5)
        peers = [server.accept()[0] for _ in range(3)]
        deadline = time.monotonic() + 5
        while len(warm._socks) < 3 and time.monotonic() < deadline:  # (all three begun)
            time.sleep(0.01)
        warm.close()
        assert warm.take() == [], "none handed out after close"
        for peer in peers:
            peer.settimeout(5)
            assert peer.recv(1) == b"", "closed: the server sees the end of the stream"
            peer.close()


def test_the_engine_is_not_loaded_before_the_listing_is_asked(tmp_path: Path) -> None:
    """Importing the pull and building a Puller loads neither the transfer
    engine nor the Xet side (20-50 ms of start-up on a busy machine): a pull
    loads them in a thread while its listing is on the way."""
    code = ("import sys\n"
            "from qwenhome.config import load_settings\n"
            "from qwenhome.pull import Puller\n"
            "Puller(load_settings({'HOME': sys.argv[1]}, home=sys.argv[1] + '/h', sources=['http://127.0.0.1:9']))\n"
            "print(sorted(m for m in ('qwenhome.transfer.engine', 'qwenhome.xetpull', 'qwenhome.hub.xet')"
            " if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "[]", (out.stdout, out.stderr[-2000:])
