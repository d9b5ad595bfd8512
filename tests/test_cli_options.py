"""The command line's surface: common options before or after the command,
numbers range-checked at parse time, a home that cannot be one named as such,
and ``verify`` of a repository the home does not hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwenhome.cli import build_parser
from tests.support.cli import RunCli
from tests.support.repos import GeneratedRepo, make_store_repo

# -- options before or after the command ------------------------------------------

@pytest.mark.parametrize("argv", [
    ["--home", "/h", "--json", "--offline", "ls"],
    ["ls", "--home", "/h", "--json", "--offline"],
    ["--home", "/h", "ls", "--json", "--offline"],
    ["--json", "--offline", "ls", "--home", "/h"],
    ["--home", "/elsewhere", "ls", "--home", "/h", "--json", "--offline"],  # the later one wins
])
def test_common_options_go_before_or_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.command, args.home, args.json, args.offline) == ("ls", "/h", True, True)


def test_an_option_before_the_command_is_not_reset_by_the_command_default() -> None:
    args = build_parser().parse_args(["--home", "/h", "--json", "mirror", "serve"])
    assert (args.home, args.json, args.offline) == ("/h", True, False)
    args = build_parser().parse_args(["ls"])
    assert (args.home, args.json, args.offline) == (None, False, False)


def test_sources_given_before_and_after_the_command_are_all_used(run_cli: RunCli) -> None:
    rc, out, err = run_cli(["--source", "http://127.0.0.1:9", "--json", "sources", "--source", "http://127.0.0.1:10"])
    assert rc == 0, err
    assert [s["url"] for s in json.loads(out)["sources"]] == ["http://127.0.0.1:9", "http://127.0.0.1:10"]


def test_home_before_the_command_is_the_home_used(run_cli: RunCli, tmp_path: Path) -> None:
    other = tmp_path / "other-home"
    rc, out, err = run_cli(["--home", str(other), "--json", "ls"])
    assert rc == 0, err
    assert json.loads(out)["home"] == str(other)


# -- numbers are range-checked when parsed -----------------------------------------

HUGE = "9" * 5000  # beyond Python's int-string conversion limit


@pytest.mark.parametrize("argv", [
    ["launch", "--port", "99999"], ["launch", "--port", "-1"], ["launch", "--port", "0"],
    ["launch", "--port", "65536"], ["launch", "--port", HUGE], ["launch", "--port", "8e3"],
    ["mirror", "serve", "--port", "99999"], ["mirror", "serve", "--port", "-1"],
    ["mirror", "serve", "--port", HUGE],
    ["pull", "Org/Name", "--connections", "-5"], ["pull", "Org/Name", "--connections", "129"],
    ["pull", "Org/Name", "--connections", HUGE], ["pull", "Org/Name", "--connections", "1.5"],
    ["gc", "--partial-age", "-1"], ["gc", "--partial-age", "nan"], ["gc", "--partial-age", "inf"],
    ["gc", "--partial-age", "-inf"], ["gc", "--partial-age", "1e400"], ["gc", "--partial-age", "36501"],
    ["launch", "--host", ""], ["mirror", "serve", "--host", ""], ["mirror", "serve", "--host", "a b"],
    ["export", "Org/Name", "-o", ""], ["export", "Org/Name", "-o", "."], ["export", "Org/Name", "-o", "a/.."],
    # int() and float() take underscores, other scripts' digits and surrounding space: a port is ASCII digits.
    ["launch", "--port", "1_000"], ["launch", "--port", "\uff11\uff12\uff13"], ["launch", "--port", " 8000"],
    ["launch", "--port", "+8000"], ["launch", "--port", "\u0661\u0662\u0663"],
    ["mirror", "serve", "--port", "1_000"], ["mirror", "serve", "--port", "\uff11\uff12\uff13"],
    ["mirror", "serve", "--port", "8090 "], ["mirror", "serve", "--cas-port", "9_000"],
    ["mirror", "serve", "--xorb-port", "\uff19"],
    ["pull", "Org/Name", "--connections", "1_6"], ["pull", "Org/Name", "--connections", "\uff18"],
    ["gc", "--partial-age", "1_0"], ["gc", "--partial-age", "\uff17"], ["gc", "--partial-age", " 7"],
    ["launch", "--max-body-mib", "1_0"], ["launch", "--max-body-mib", "\uff11"],
    ["mirror", "serve", "--max-connections", "0"], ["mirror", "serve", "--max-connections", "4097"],
    ["mirror", "serve", "--max-connections", "\uff18"], ["mirror", "serve", "--head-timeout", "0"],
    ["mirror", "serve", "--head-timeout", "nan"], ["mirror", "serve", "--head-timeout", "3601"],
])
def test_out_of_range_numbers_are_usage_errors_at_parse_time(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:  # (parsing only: nothing runs, whatever the outcome)
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "usage: qwenhome" in err and f": argument {argv[-2]}" in err
    assert err.splitlines()[-1].startswith("error[usage]: qwenhome ") and "(hint: qwenhome " in err, err


@pytest.mark.parametrize(("argv", "option"), [
    (["launch", "--port", "99999"], "--port"), (["mirror", "serve", "--port", "-1"], "--port"),
    (["pull", "Org/Name", "--connections", "-5", "--offline"], "--connections"),
    (["launch", "--port", "1_000"], "--port"), (["mirror", "serve", "--port", "\uff11\uff12\uff13"], "--port"),
])
def test_out_of_range_numbers_end_the_real_command_with_a_usage_line(
        argv: list[str], option: str, run_cli: RunCli) -> None:
    rc, out, err = run_cli(argv, timeout=60)
    assert rc == 2 and err.splitlines()[-1].startswith("error[usage]: qwenhome "), err
    assert f": argument {option}:" in err, err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize(("argv", "dest", "value"), [
    (["pull", "O/N", "--connections", "0"], "connections", 0),
    (["pull", "O/N", "--connections", "128"], "connections", 128),
    (["mirror", "serve", "--port", "0"], "port", 0),
    (["launch", "--port", "65535"], "port", 65535),
    (["gc", "--partial-age", "0"], "partial_age", 0.0),
    (["gc", "--partial-age", "0.5"], "partial_age", 0.5),
    (["gc", "--partial-age", "007"], "partial_age", 7.0),
    (["launch", "--port", "08000"], "port", 8000),
    (["launch", "--max-body-mib", "2.5"], "max_body_mib", 2.5),
    (["mirror", "serve"], "max_connections", 256), (["mirror", "serve"], "head_timeout", 10.0),
    (["mirror", "serve", "--max-connections", "1"], "max_connections", 1),
    (["mirror", "serve", "--max-connections", "4096"], "max_connections", 4096),
    (["mirror", "serve", "--head-timeout", "0.1"], "head_timeout", 0.1),
    (["mirror", "serve", "--head-timeout", "3600"], "head_timeout", 3600.0),
])
def test_range_bounds_are_accepted(argv: list[str], dest: str, value: float) -> None:
    assert getattr(build_parser().parse_args(argv), dest) == value


# -- the home must be folders ------------------------------------------------------

@pytest.mark.parametrize("blocker", ["home", "home/qwenhome", "home/hub", "parent"])
def test_a_file_where_the_home_needs_a_folder_is_named(blocker: str, run_cli: RunCli, tmp_path: Path) -> None:
    home = tmp_path / "h" / "home"
    in_the_way = {"home": home, "home/qwenhome": home / "qwenhome", "home/hub": home / "hub",
                  "parent": home.parent}[blocker]
    in_the_way.parent.mkdir(parents=True, exist_ok=True)
    in_the_way.write_text("mine")
    for argv in (["--home", str(home), "ls"], ["ls", "--home", str(home)], ["path", "Org/N", "--home", str(home)]):
        rc, _out, err = run_cli(argv)
        assert rc == 2, err
        assert err.startswith("error[home-not-a-folder]: ") and str(in_the_way) in err, err
        assert "hint: move or rename" in err and "Traceback" not in err
    assert in_the_way.read_text() == "mine"


def test_qwen_home_naming_a_file_is_named_too(run_cli: RunCli, tmp_path: Path) -> None:
    f = tmp_path / "a-file"
    f.write_text("x")
    rc, _, err = run_cli(["ls"], home=f)
    assert rc == 2 and err.startswith("error[home-not-a-folder]: ") and "QWEN_HOME" in err, err


# -- verify --------------------------------------------------------------------------

def test_verify_of_a_repository_not_in_the_home_is_not_found(
        run_cli: RunCli, qwen_home: Path, small_repo: GeneratedRepo) -> None:
    rc, out, err = run_cli(["verify", "Qwen/notthere"])
    assert rc == 3 and err.startswith("error[snapshot-not-found]: ") and "Qwen/notthere" in err, err
    assert "blobs checked" not in out
    make_store_repo(qwen_home / "hub", small_repo, commit="a" * 40)
    rc, out, err = run_cli(["verify", "Org/Small@v9"])  # the repo is here; that revision is not
    assert rc == 3 and err.startswith("error[snapshot-not-found]: "), err
    rc, out, err = run_cli(["verify", "Org/Small"])
    assert rc == 0 and f"Org/Small: {len(small_repo.files)} blobs checked, ok" in out, (out, err)
    rc, out, err = run_cli(["--json", "verify", "Org/Else"])
    assert rc == 3 and json.loads(out)["error"]["code"] == "snapshot-not-found"


# -- export's output -------------------------------------------------------------------

@pytest.mark.parametrize("where", ["missing/x.tar", "a-file/x.tar"])
def test_export_into_a_folder_that_is_not_one_is_a_usage_error(
        where: str, run_cli: RunCli, qwen_home: Path, small_repo: GeneratedRepo, tmp_path: Path) -> None:
    make_store_repo(qwen_home / "hub", small_repo, commit="a" * 40)
    (tmp_path / "a-file").write_text("x")
    rc, _, err = run_cli(["export", "Org/Small", "-o", str(tmp_path / where)])
    assert rc == 2 and err.startswith("error[invalid-path]: ") and "is not a folder" in err, err
    assert "Traceback" not in err and (tmp_path / "a-file").read_text() == "x"


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_home_is_refused_rather_than_taken_as_the_default(value: str, run_cli: RunCli) -> None:
    """An empty ``--home`` (an unset shell variable) used to mean the default home."""
    rc, out, err = run_cli(["ls", "--home", value], timeout=60)
    assert rc == 2 and err.startswith("error[invalid-home]: --home is empty"), err
    assert out == ""
