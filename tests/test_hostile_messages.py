"""A server's words reach the user's terminal only as text: the control
characters of its error messages (ESC sequences that retitle the window,
clear the screen or recolour it; line breaks that forge lines) are shown
as escapes, in the error line and in the progress lines alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenhome.errors import EXIT_NETWORK, EXIT_NOT_FOUND
from tests.conftest import RunCli
from tests.support.mirror import Mirror

EVIL = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\r\nerror[ok]: all fine\x9b"


def no_control(text: str) -> None:
    bad = [c for c in text if c != "\n" and (ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f)]
    assert not bad, (bad, text)


@pytest.mark.parametrize("where", ["header", "body"])
def test_a_server_message_with_escape_sequences_is_shown_escaped(where: str, run_cli: RunCli, mirror: Mirror) -> None:
    api = "/api/models/Org/Small/revision/main"
    if where == "header":  # (a header carries latin-1: ESC, BEL, C1 all fit)
        mirror.faults.respond(404, b"", path=api, headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": EVIL})
    else:
        mirror.faults.respond_json({"error": EVIL}, path=api, status=404)
    res = run_cli(["pull", "Org/Small"], endpoint=mirror.url)
    assert res.returncode == EXIT_NOT_FOUND, res.stderr
    no_control(res.stderr)
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error[repo-not-found]: ") and "\\x1b]0;owned" in last, last


def test_retry_and_file_error_lines_show_a_server_message_escaped(
        run_cli: RunCli, qwen_home: Path, mirror: Mirror) -> None:
    (qwen_home / "qwenhome").mkdir()
    (qwen_home / "qwenhome" / "config.toml").write_text("[pull]\nmax_retries = 1\n")
    mirror.faults.respond_json({"error": EVIL}, path="config.json", status=500)
    res = run_cli(["pull", "Org/Small"], endpoint=mirror.url)
    assert res.returncode == EXIT_NETWORK, res.stderr
    assert "red" in res.stderr  # (the message is shown, escaped)
    no_control(res.stderr)


def test_a_bare_404_for_a_listed_file_is_entry_not_found_not_repo_not_found(
        run_cli: RunCli, mirror: Mirror) -> None:
    """A plain web server (a static mirror) answers a missing file with a bare
    404: the repository exists (its listing just came), so the error names
    the file, not 'check the repository id'."""
    mirror.faults.respond(404, b"<h1>Not Found</h1>", path="config.json", content_type="text/html")
    res = run_cli(["pull", "Org/Small"], endpoint=mirror.url)
    assert res.returncode == EXIT_NOT_FOUND, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error[entry-not-found]: ") and "config.json" in last, last
    assert "repository id" not in last, last


def test_a_source_url_with_credentials_never_shows_them(run_cli: RunCli, mirror: Mirror) -> None:
    """``--source http://user:secret@host``: error lines, --json errors and
    ``sources`` name the URL without its user:password@."""
    mirror.faults.respond_json({"error": "nope"}, path="/api/models/Org/Gone/revision/main", status=404)
    with_secret = mirror.url.replace("http://", "http://user:s3cret@")
    for args in (["pull", "Org/Gone"], ["pull", "--json", "Org/Gone"], ["sources"], ["sources", "--json"]):
        res = run_cli([*args, "--source", with_secret])
        assert "Traceback" not in res.stderr, res.stderr
        assert "s3cret" not in res.stdout + res.stderr, (args, res.stdout, res.stderr)
        assert mirror.url.removeprefix("http://") in res.stdout + res.stderr, (args, res.stdout, res.stderr)
