"""Credentials never reach the log or the terminal, at any level: a URL's
``user:password@``, ``token=`` and ``access_token=`` query values (a signed
URL's signature stays: it is bound to one object and expires), and
``Authorization`` values are masked by the one redaction every message and
log line goes through."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from qwenhome import logs
from qwenhome.errors import redact
from tests.conftest import RunCli
from tests.support.mirror import Mirror

SECRETS = ("PASSWORD-1", "QTOKEN-3", "ATOKEN-4", "BEARER-5", "HDRTOKEN-6")


def test_a_pull_at_debug_level_shows_no_credential(run_cli: RunCli, mirror: Mirror, qwen_home: Path) -> None:
    """The source has a password; a file's answer redirects to a URL carrying
    tokens in its query, which then fails: the retries and the error name it."""
    cdn = f"{mirror.url}/cdn-broken/config.json?token=QTOKEN-3&x=1&access_token=ATOKEN-4&X-Xet-Signature=SIGOK"
    mirror.faults.respond(302, b"", path="config.json", method="GET", headers={"Location": cdn})
    mirror.faults.fail(500, times=None, path="/cdn-broken/config.json")
    config = qwen_home / "qwenhome" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    source = mirror.url.replace("http://", "http://alice:PASSWORD-1@")
    config.write_text(f'[[sources]]\nname = "team"\nurl = "{source}"\ntoken = "BEARER-5"\n'
                      "[pull]\nmax_retries = 1\n")
    rc, out, err = run_cli(["-vv", "pull", "Org/Small"], env={"QWENHOME_LOG": "debug"}, timeout=120)
    assert rc != 0 and "cdn-broken" in err, err  # the failing URL is named...
    assert "SIGOK" in err, err  # ...with its signature...
    for secret in SECRETS:
        assert secret not in err + out, secret  # ...and without any credential
    assert mirror.faults.records(path="/cdn-broken/config.json"), "the redirect was followed"


def test_the_log_masks_what_any_module_writes(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure(logging.DEBUG, stream)
    log = logging.getLogger("qwenhome.some.module")
    log.debug("GET %s", "https://alice:PASSWORD-1@host.example/x?token=QTOKEN-3&X-Amz-Signature=SIGOK")
    log.info("headers %s", {"Authorization": "Bearer BEARER-5", "User-Agent": "qwenhome"})
    log.warning("sent authorization: token HDRTOKEN-6")
    try:
        raise OSError("cannot reach https://h.example/a?access_token=ATOKEN-4")
    except OSError:
        log.debug("failed", exc_info=True)
    text = stream.getvalue()
    assert "SIGOK" in text and "host.example/x" in text and "User-Agent" in text
    for secret in SECRETS:
        assert secret not in text, (secret, text)


def test_redact_keeps_what_is_not_a_credential() -> None:
    assert redact("http://h/x?tokens=1&notatoken=2&token_type=bearer") == "http://h/x?tokens=1&notatoken=2&token_type=bearer"
    assert redact("see https://a:b@h/p?Token=T1&access_token=T2#f") == "see https://h/p?Token=***&access_token=***#f"
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
