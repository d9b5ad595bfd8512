"""Small pure parts of the app: stop sequences on streamed text, error
statuses, exit descriptions, the model-state rule, the engine choice, the
server's frozen heap."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from qwenhome.app.errors import ApiError, error_body, status_for
from qwenhome.app.launch import choose_engine, local_url
from qwenhome.app.models_api import _model_state
from qwenhome.app.stops import StopMatcher
from qwenhome.app.supervisor import describe_exit, last_meaningful_line, oom_kill_count
from qwenhome.errors import (
    DiskFullError,
    NetworkError,
    NotCachedError,
    OfflineError,
    QwenhomeError,
    RepoNotFoundError,
    UsageError,
)


def feed_all(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    m = StopMatcher(stops)
    out = "".join(m.feed(p) for p in pieces)
    return out + m.flush(), m.stopped


@pytest.mark.parametrize(
    ("stops", "pieces", "expected", "stopped"),
    [
        ([], ["a", "b"], "ab", False),
        (["END"], ["hello E", "N", "D more"], "hello ", True),
        (["END"], ["hello E", "N", "o"], "hello ENo", False),  # a near miss is released
        (["\n\n", "###"], ["one\n", "\ntwo"], "one", True),
        (["ab"], ["xa", "a", "b"], "xa", True),
        (["stop"], ["st"], "st", False),  # held back, then flushed at the end
    ],
)
def test_stop_matcher_never_emits_part_of_a_stop_sequence(
    stops: list[str], pieces: list[str], expected: str, stopped: bool
) -> None:
    assert feed_all(stops, pieces) == (expected, stopped)


def test_stop_matcher_holds_back_only_a_possible_prefix() -> None:
    m = StopMatcher(["END"])
    assert m.feed("abcE") == "abc"
    assert m.feed("x") == "Ex"


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (UsageError("bad", code="invalid-repo-id"), 400),
        (NotCachedError("missing"), 404),
        (RepoNotFoundError("nope"), 404),
        (OfflineError("offline"), 503),
        (NetworkError("down"), 502),
        (DiskFullError("full"), 507),
        (ApiError(409, "busy", code="model-in-use"), 409),
        (QwenhomeError("other"), 500),
    ],
)
def test_errors_map_to_http_statuses_and_keep_the_cli_code(exc: QwenhomeError, status: int) -> None:
    assert status_for(exc) == status
    body = error_body(exc)["error"]
    assert body["code"] == exc.code and body["message"] == exc.message
    expected_type = {404: "not_found_error", 500: "server_error", 502: "server_error", 503: "server_error",
                     507: "server_error"}.get(status, "invalid_request_error")
    assert body["type"] == expected_type


def test_exit_descriptions_name_the_signal_and_the_out_of_memory_killer() -> None:
    assert describe_exit(-9).startswith("killed by SIGKILL (signal 9): by another process, or by the kernel")
    assert describe_exit(-9, oom_kills=1) == (
        "killed by SIGKILL (signal 9): the kernel's out-of-memory killer stopped it (the machine ran out of memory)")
    assert describe_exit(-15) == "killed by SIGTERM (signal 15)"
    assert describe_exit(3) == "exited with code 3"
    assert last_meaningful_line(["real error", "Loading: 100%|###| 26/26", "  "]) == "real error"
    count = oom_kill_count()
    assert count is None or count >= 0
    if Path("/proc/vmstat").is_file():
        assert isinstance(count, int)  # Linux keeps the count; reading it must work


def test_a_killed_child_is_reported_by_its_signal_not_by_its_last_warning() -> None:
    import sys
    import time

    from qwenhome.app.supervisor import Child, RestartPolicy

    said: list[str] = []
    script = ("import sys, time; print('UserWarning: TypedStorage is deprecated', file=sys.stderr, flush=True); "
              "time.sleep(60)")
    child = Child("server", [sys.executable, "-c", script], {}, RestartPolicy(backoff=(0.05,)), said.append)
    child.stderr_sink = open("/dev/null", "w")  # noqa: SIM115
    child.start()
    deadline = time.monotonic() + 30
    while not child.tail:  # the warning was written before the kill
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    child.proc.wait(30)  # type: ignore[union-attr]
    assert child.check(time.monotonic()) is None
    assert said and said[0].startswith("server killed by SIGKILL (signal 9)"), said
    assert "TypedStorage" not in said[0] and said[0].endswith("; restarting in 0.05 s")
    child.stop()


def test_model_state_rule() -> None:
    assert _model_state({"revisions": [{"complete": True}]}, pulling=False) == "complete"
    assert _model_state({"revisions": [{"complete": False}]}, pulling=False) == "incomplete"
    assert _model_state({"revisions": [{"complete": None}]}, pulling=False) == "unverified"
    assert _model_state({"revisions": [{"complete": True}]}, pulling=True) == "pulling"


def test_explicit_engine_is_kept_and_auto_without_vllm_is_transformers() -> None:
    assert choose_engine("vllm", {}) == "vllm"
    assert choose_engine("auto", {"PATH": "/nonexistent"}) == "transformers"
    assert local_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert local_url("::", 8000) == "http://[::1]:8000"


def test_a_child_that_keeps_crashing_is_restarted_with_backoff_then_given_up() -> None:
    import sys
    import time

    from qwenhome.app.supervisor import Child, RestartPolicy

    said: list[str] = []
    child = Child("engine", [sys.executable, "-c", "import sys; print('out of memory', file=sys.stderr); sys.exit(1)"],
                  {}, RestartPolicy(max_restarts=2, backoff=(0.05, 0.1)), said.append)
    child.stderr_sink = open("/dev/null", "w")  # noqa: SIM115  (closed with the test process)
    child.start()
    deadline = time.monotonic() + 30
    fatal = None
    while fatal is None:
        assert time.monotonic() < deadline, said
        fatal = child.check(time.monotonic())
        time.sleep(0.02)
    assert fatal == "engine exited with code 1: out of memory; gave up after 2 restarts"
    assert said == [
        "engine exited with code 1: out of memory; restarting in 0.05 s",
        "restarting engine (restart 1 of 2)",
        "engine exited with code 1: out of memory; restarting in 0.1 s",
        "restarting engine (restart 2 of 2)",
    ]


def test_a_child_failing_with_a_fatal_code_is_not_restarted() -> None:
    import sys
    import time

    from qwenhome.app.supervisor import Child, RestartPolicy

    said: list[str] = []
    child = Child("server", [sys.executable, "-c", "import sys; print('error[engine-load-failed]: bad weights', file=sys.stderr); sys.exit(3)"],
                  {}, RestartPolicy(), said.append)
    child.stderr_sink = open("/dev/null", "w")  # noqa: SIM115
    child.start()
    child.proc.wait(30)  # type: ignore[union-attr]
    assert child.check(time.monotonic()) == "server exited with code 3: error[engine-load-failed]: bad weights"
    assert said == []


def test_importing_the_app_does_not_import_an_engine() -> None:
    import subprocess
    import sys

    code = ("import sys, qwenhome.app, qwenhome.app.server, qwenhome.app.launch, qwenhome.app.serve, qwenhome.demo; "
            "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'diffusers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_the_allow_list_takes_own_names_on_the_own_port_and_allowed_hosts_anywhere() -> None:
    from qwenhome.app.guard import AllowList, parse_origin, split_host

    allow = AllowList.parse("0.0.0.0", ["box.lan", "[fd00::5]:9000"])
    server = ("192.168.1.5", 8000)  # the address the connection reached
    ok = ["localhost:8000", "127.0.0.1:8000", "[::1]:8000", "192.168.1.5:8000", "box.lan", "box.lan:1",
          "[fd00::5]:9000"]
    bad = ["localhost:8001", "evil.example:8000", "192.168.1.6:8000", "[fd00::5]:9001", "0.0.0.0:8000",
           "localhost.evil.example:8000"]
    for value in ok + bad:
        name, port = split_host(value)
        assert allow.allows(name, port, server) is (value in ok), value
    assert AllowList.parse("10.0.0.2").allows("10.0.0.2", 80, ("127.0.0.1", 80))  # the bound address
    for value in ("", "a/b", "user@host", "host:port", "host:99999", " host"):
        with pytest.raises(ValueError):
            split_host(value)
    assert parse_origin("https://Box.LAN") == ("https", "box.lan", 443)
    for value in ("null", "file://", "ftp://x", "http://x/path"):
        with pytest.raises(ValueError):
            parse_origin(value)
    with pytest.raises(QwenhomeError) as info:
        AllowList.parse("127.0.0.1", ["bad host"])
    assert info.value.code == "invalid-allowed-host"


def test_the_servers_heap_is_frozen_so_a_full_collection_skips_what_the_start_made() -> None:
    # The API process freezes what its imports and start made: a full
    # collection on the event loop then walks only what requests made since.
    import gc

    from qwenhome.app.serve import freeze_heap

    made_at_start = [[i] for i in range(1000)]  # long-lived, as the routes' and libraries' objects
    gc.unfreeze()
    try:
        freeze_heap()
        assert gc.get_freeze_count() >= len(made_at_start)
        oldest = {id(o) for o in gc.get_objects(generation=2)}
        assert not any(id(x) in oldest for x in made_at_start)
    finally:
        gc.unfreeze()
