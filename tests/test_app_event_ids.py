"""The pull events stream (server-sent events) takes a reconnecting
client's ``Last-Event-ID`` only when it is a plain number: 5,000 digits,
superscripts, other scripts' digits are ignored (the stream starts over),
never a 500."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from qwenhome.app.server import create_app
from qwenhome.app.state import AppState
from qwenhome.config import load_settings
from tests.app_support.servers import serve_app
from tests.support.mirror import Mirror


def test_a_last_event_id_that_is_no_plain_number_is_ignored(tmp_path: Path, mirror: Mirror) -> None:
    settings = load_settings({}, home=str(tmp_path / "home"), sources=[mirror.url])
    state = AppState(settings, "Other/Model")
    with serve_app(create_app(state)) as url, httpx.Client(base_url=url, timeout=60) as client:
        job = client.post("/api/models/pull", json={"repo": "Org/Small"}).json()
        with client.stream("GET", job["events"]) as r:
            ids = [int(line[4:]) for line in r.iter_lines() if line.startswith("id: ")]
        assert ids and ids[0] == 0
        for last in ("9" * 5000, "\u00b2".encode("latin-1"), "\u0661".encode("utf-8"), b"1_0", b"+1", b"-1"):
            with client.stream("GET", job["events"], headers={"Last-Event-ID": last}) as r:
                assert r.status_code == 200, (last, r.read())
                got = [int(line[4:]) for line in r.iter_lines() if line.startswith("id: ")]
            assert got == ids, (last, got)
        with client.stream("GET", job["events"], headers={"Last-Event-ID": str(ids[0])}) as r:
            assert [int(line[4:]) for line in r.iter_lines() if line.startswith("id: ")] == ids[1:]
        assert json.loads(client.get("/health").text)
