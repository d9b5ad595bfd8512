"""Homes and configuration files no one would make on purpose (a config.toml
of random bytes or nested thousands deep, a home that is a symbolic link to
itself, a home path longer than the system allows): one error line that
names the real cause, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenhome.errors import EXIT_USAGE
from tests.conftest import RunCli
from tests.support.cli import CliResult


def one_error_line(res: CliResult, code: str) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == EXIT_USAGE, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error[{code}]: ") and "(hint: " in line, line
    return line


@pytest.mark.parametrize(("content", "says"), [
    (b"a = " + b"[" * 5000, "nested too deep"),
    (b"[pull]\nconnections = 4\n# caf\xe9\n", "not UTF-8 text"),
], ids=["nested-5000-deep", "latin-1"])
@pytest.mark.parametrize("command", [["ls"], ["gc"], ["env"]])
def test_a_config_file_no_parser_reads_is_config_invalid(
        content: bytes, says: str, command: list[str], run_cli: RunCli, qwen_home: Path) -> None:
    config = qwen_home / "qwenhome" / "config.toml"
    config.parent.mkdir()
    config.write_bytes(content)
    line = one_error_line(run_cli(command), "config-invalid")
    assert str(config) in line and says in line, line


def test_a_home_that_is_a_link_to_itself_is_not_a_folder(run_cli: RunCli, tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    line = one_error_line(run_cli(["ls"], home=loop), "home-not-a-folder")
    assert str(loop) in line and "config" not in line, line


def test_a_home_path_longer_than_the_system_allows_is_invalid_home(run_cli: RunCli, tmp_path: Path) -> None:
    home = tmp_path.joinpath(*["d" * 200] * 25)  # 5,000 characters: past PATH_MAX
    line = one_error_line(run_cli(["ls"], env={"QWEN_HOME": str(home)}), "invalid-home")
    assert "too long" in line and "config" not in line, line


@pytest.mark.parametrize("endpoint", ["http://[::1", "http://127.0.0.1:99999", "ftp://mirror.example"])
@pytest.mark.parametrize("command", [["ls"], ["pull", "Org/Small"]])
def test_an_hf_endpoint_that_is_no_http_url_is_invalid_source(
        endpoint: str, command: list[str], run_cli: RunCli) -> None:
    """(An unclosed IPv6 bracket ended every command, ls included, in a
    ValueError traceback; ftp:// was tried and called 'offline: bad-url'.)"""
    line = one_error_line(run_cli(command, env={"HF_ENDPOINT": endpoint}), "invalid-source")
    assert "HF_ENDPOINT" in line and endpoint in line, line


def test_a_source_flag_with_an_unclosed_ipv6_bracket_is_invalid_source(run_cli: RunCli) -> None:
    one_error_line(run_cli(["pull", "Org/Small", "--source", "http://[::1"]), "invalid-source")
