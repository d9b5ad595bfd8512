"""A source given by its URL (``--source URL``, or config.toml without a
name) is named by that URL in progress lines and errors, not by an invented
"hf"; a configured source keeps its configured name. Real CLI runs against a
real mirror and a refused port on 127.0.0.1."""

from __future__ import annotations

import socket
from pathlib import Path

from qwenhome.config import Source, load_settings, parse_source_spec
from qwenhome.store import RepoRef, Store
from tests.support.cli import RunCli
from tests.support.mirror import Mirror
from tests.support.repos import GeneratedRepo


def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_a_pull_from_a_source_url_names_that_url_in_its_progress_line(
        run_cli: RunCli, qwen_home: Path, mirror: Mirror, small_repo: GeneratedRepo) -> None:
    rc, _, err = run_cli(["pull", "Org/Small", "--source", mirror.url])
    assert rc == 0, err
    commit = Store(qwen_home / "hub", qwen_home / "qwenhome").snapshot_path(RepoRef("Org/Small")).name
    assert f"({commit} from {mirror.url})" in err, err
    assert "from hf" not in err


def test_an_error_about_a_source_url_names_that_url(run_cli: RunCli, small_repo: GeneratedRepo) -> None:
    url = refused_url()
    rc, _, err = run_cli(["pull", "Org/Small", "--source", url])
    assert rc == 8, err
    assert err.startswith("error[offline]:") and f"{url}: connection-refused" in err, err
    assert "hf:" not in err and "hf0" not in err


def test_a_configured_source_keeps_its_name_in_errors(run_cli: RunCli, qwen_home: Path,
                                                      small_repo: GeneratedRepo) -> None:
    url = refused_url()
    config = qwen_home / "qwenhome" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[[sources]]\nname = "office"\nurl = "{url}"\n')
    rc, _, err = run_cli(["pull", "Org/Small"])
    assert rc == 8, err
    assert "office: connection-refused" in err, err


def test_labels(tmp_path: Path) -> None:
    assert parse_source_spec("https://user:secret@hf-mirror.com/hub/", 1).label == "https://hf-mirror.com/hub"
    assert parse_source_spec("modelscope:https://modelscope.cn").label == "https://modelscope.cn"
    assert parse_source_spec("http://[::1]:8090").label == "http://[::1]:8090"
    assert Source("team", "hf", "http://mirror.lan:8090").label == "team"
    env = {"HOME": str(tmp_path)}
    assert load_settings(env, home=str(tmp_path / "h")).sources[0].label == "hf"
    with_endpoint = load_settings({**env, "HF_ENDPOINT": "http://127.0.0.1:9"}, home=str(tmp_path / "h"))
    assert with_endpoint.sources[0].label == "http://127.0.0.1:9"
