"""--fix: reachable sources first in qwenhome's config (comments, unknown keys
and tokens kept, tokens never shown), the one-home exports in env.sh."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

from qwenhome.doctor import render_report, run_doctor
from tests.doctor_support.hub import FakeHub
from tests.doctor_support.setup import options_for, settings_for
from tests.doctor_support.sockets import closed_port

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _write_config(tmp_path: Path, dead_url: str, live_url: str) -> Path:
    config = tmp_path / "home" / "qwenhome" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        "# my sources, best first\n"
        "[network]\nconnect_timeout = 5\n\n"
        "[[sources]]\n"
        f'name = "office"  # the office mirror\nkind = "hf"\nurl = "{dead_url}"\n'
        'token = "hf_SECRET_OFFICE"\npriority = 3\n\n'
        "[pull]\nconnections = 8\n\n"
        "[[sources]]\n"
        f'name = "home"\nkind = "hf"\nurl = "{live_url}"\ntoken = "hf_SECRET_HOME"\n'
    )
    os.chmod(config, 0o600)
    return config


def test_fix_puts_the_reachable_source_first_keeping_tokens_and_unknown_keys(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    with FakeHub() as hub:
        config = _write_config(tmp_path, dead, hub.url)
        settings = settings_for(tmp_path)
        assert [s.name for s in settings.sources] == ["office", "home"]
        report = run_doctor(settings, fix=True, repo="Org/Model", options=options_for(tmp_path))
    assert [f.id for f in report.fixes_applied] == ["reorder-sources"]
    assert report.fixes_applied[0].path == str(config)
    data = tomllib.loads(config.read_text())
    assert [s["name"] for s in data["sources"]] == ["home", "office"]
    assert data["sources"][1] == {"name": "office", "kind": "hf", "url": dead, "token": "hf_SECRET_OFFICE",
                                  "priority": 3}
    assert data["sources"][0]["token"] == "hf_SECRET_HOME"
    assert data["pull"] == {"connections": 8} and data["network"] == {"connect_timeout": 5}
    text = config.read_text()
    assert "# my sources, best first" in text and "# the office mirror" in text
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    shown = json.dumps(report.to_dict()) + render_report(report)
    assert "SECRET" not in shown
    assert "reorder-sources" in render_report(report)
    # The next load uses the new order.
    assert [s.name for s in settings_for(tmp_path).sources] == ["home", "office"]


def test_fix_leaves_the_config_alone_when_the_first_source_works(tmp_path: Path) -> None:
    with FakeHub() as hub:
        config = _write_config(tmp_path, hub.url, f"http://127.0.0.1:{closed_port()}")
        before = config.read_text()
        report = run_doctor(settings_for(tmp_path), fix=True, repo="Org/Model", options=options_for(tmp_path))
    assert report.fixes_applied == ()
    assert config.read_text() == before


def test_fix_writes_sources_from_flags_into_a_config_without_sources(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    with FakeHub() as hub:
        settings = settings_for(tmp_path, [dead, hub.url])
        report = run_doctor(settings, fix=True, repo="Org/Model", options=options_for(tmp_path))
    assert [f.id for f in report.fixes_applied] == ["reorder-sources"]
    assert settings.config_file is not None
    data = tomllib.loads(settings.config_file.read_text())
    assert [s["url"] for s in data["sources"]] == [hub.url, dead]


def test_without_fix_nothing_is_written(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    env = {"TRANSFORMERS_CACHE": str(tmp_path / "tf")}
    with FakeHub() as hub:
        settings = settings_for(tmp_path, [dead, hub.url], env)
        report = run_doctor(settings, repo="Org/Model", options=options_for(tmp_path))
    assert report.fixes_applied == ()
    assert settings.config_file is not None and not settings.config_file.exists()
    assert not (settings.home / "env.sh").exists()


def test_fix_writes_the_one_home_exports_to_env_sh_once(tmp_path: Path) -> None:
    env = {"TRANSFORMERS_CACHE": str(tmp_path / "tf"), "HF_HUB_ENABLE_HF_TRANSFER": "1"}
    settings = settings_for(tmp_path, [f"http://127.0.0.1:{closed_port()}"], env)
    report = run_doctor(settings, fix=True, options=options_for(tmp_path))
    env_sh = settings.home / "env.sh"
    assert [f.id for f in report.fixes_applied] == ["write-env-sh"]
    assert report.fixes_applied[0].path == str(env_sh)
    text = env_sh.read_text()
    assert f"export HF_HUB_CACHE='{settings.hub_cache}'" in text
    assert "unset TRANSFORMERS_CACHE" in text and "HF_HUB_ENABLE_HF_TRANSFER" in text
    again = run_doctor(settings, fix=True, options=options_for(tmp_path))
    assert again.fixes_applied == ()  # already right: not rewritten


def test_fix_refuses_a_reorder_that_would_change_the_config_and_says_so(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    with FakeHub() as hub:
        config = tmp_path / "home" / "qwenhome" / "config.toml"
        config.parent.mkdir(parents=True)
        # A sub-table of the first source: moving blocks as text would attach it to the other one.
        config.write_text(f'[[sources]]\nname = "a"\nurl = "{dead}"\n[sources.extra]\nx = 1\n\n'
                          f'[[sources]]\nname = "b"\nurl = "{hub.url}"\n')
        before = config.read_text()
        report = run_doctor(settings_for(tmp_path), fix=True, repo="Org/Model", options=options_for(tmp_path))
    assert report.fixes_applied == ()
    assert config.read_text() == before
    check = next(c for c in report.checks if c.id == "fix:reorder-sources")
    assert (check.status, check.code) == ("warn", "fix-failed")
