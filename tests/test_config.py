"""Home resolution and sources, from an environment mapping (never os.environ)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenhome.config import MIRROR_TOKEN_ENV, load_settings, mirror_token, resolve_home
from qwenhome.errors import ConfigError, UsageError


def test_home_precedence_flag_then_qwen_home_then_hf_home_then_default(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "QWEN_HOME": str(tmp_path / "q"), "HF_HOME": str(tmp_path / "h"),
           "HF_HUB_CACHE": str(tmp_path / "c")}
    assert resolve_home(env, str(tmp_path / "f")) == (tmp_path / "f", tmp_path / "f/hub", "flag")
    assert resolve_home(env) == (tmp_path / "q", tmp_path / "q/hub", "QWEN_HOME")
    del env["QWEN_HOME"]
    # HF_HUB_CACHE is where the user's other tools already look: it is the store.
    assert resolve_home(env) == (tmp_path / "h", tmp_path / "c", "HF_HUB_CACHE")
    del env["HF_HUB_CACHE"]
    assert resolve_home(env) == (tmp_path / "h", tmp_path / "h/hub", "HF_HOME")
    del env["HF_HOME"]
    assert resolve_home(env) == (tmp_path / ".cache/huggingface", tmp_path / ".cache/huggingface/hub", "default")
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    assert resolve_home(env)[0] == tmp_path / "xdg/huggingface"


def test_settings_are_frozen_and_state_lives_beside_the_store(tmp_path: Path) -> None:
    s = load_settings({"HOME": str(tmp_path)}, home=str(tmp_path / "home"))
    assert s.hub_cache == tmp_path / "home/hub"
    assert s.partials_dir == tmp_path / "home/qwenhome/partials"
    with pytest.raises(AttributeError):
        s.home = tmp_path  # type: ignore[misc]


def test_hf_token_goes_only_to_hugging_face_hosts(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "HF_TOKEN": "hf_x"}
    assert load_settings(env, home=str(tmp_path)).sources[0].token == "hf_x"
    mirror = load_settings(env, home=str(tmp_path), sources=["http://127.0.0.1:9"]).sources[0]
    assert mirror.token is None
    env["HF_ENDPOINT"] = "https://mirror.example"
    assert load_settings(env, home=str(tmp_path)).sources[0].token is None


def test_source_specs_and_config_file(tmp_path: Path) -> None:
    s = load_settings({"HOME": str(tmp_path)}, home=str(tmp_path),
                      sources=["http://127.0.0.1:1", "modelscope:http://127.0.0.1:2"])
    assert [(x.kind, x.url) for x in s.sources] == [("hf", "http://127.0.0.1:1"), ("modelscope", "http://127.0.0.1:2")]
    with pytest.raises(UsageError) as info:
        load_settings({"HOME": str(tmp_path)}, home=str(tmp_path), sources=["ftp://x"])
    assert info.value.code == "invalid-source"
    cfg = tmp_path / "qwenhome" / "config.toml"
    cfg.parent.mkdir()
    cfg.write_text('[[sources]]\nurl = "http://127.0.0.1:3"\ntoken = "tok-secret-xyz"\n[pull]\nconnections = 7\n')
    s = load_settings({"HOME": str(tmp_path)}, home=str(tmp_path))
    assert s.sources[0].url == "http://127.0.0.1:3" and s.sources[0].token == "tok-secret-xyz"
    assert s.max_connections == 7
    assert "tok-secret-xyz" not in repr(s.sources[0]), "tokens never show in reprs or logs"
    cfg.write_text("[[sources]\n")
    with pytest.raises(ConfigError):
        load_settings({"HOME": str(tmp_path)}, home=str(tmp_path))


def test_offline_flag_and_hf_hub_offline(tmp_path: Path) -> None:
    assert load_settings({"HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}, home=str(tmp_path)).offline_forced
    assert load_settings({"HOME": str(tmp_path)}, home=str(tmp_path), offline=True).offline_forced
    assert not load_settings({"HOME": str(tmp_path), "HF_HUB_OFFLINE": "0"}, home=str(tmp_path)).offline_forced


@pytest.mark.parametrize("toml", [
    "[pull]\nconnections = -5\n", "[pull]\nconnections = 129\n", '[pull]\nconnections = "x"\n',
    "[pull]\nconnections = 2.5\n", "[pull]\nconnections = true\n", "[pull]\nmax_retries = -1\n",
    "[network]\nconnect_timeout = nan\n", "[network]\nread_timeout = inf\n", "[network]\nstall_timeout = 0\n",
    '[network]\nprobe_timeout = "1"\n', "[pull]\nconnections = 99999999999999999999999\n",
    "[network]\nmin_rate = -1\n", "[network]\nmin_rate = 1e10\n", '[network]\nmin_rate = "256"\n',
])
def test_config_numbers_out_of_range_are_config_errors(tmp_path: Path, toml: str) -> None:
    cfg = tmp_path / "qwenhome" / "config.toml"
    cfg.parent.mkdir()
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings({"HOME": str(tmp_path)}, home=str(tmp_path))
    assert info.value.code == "config-invalid" and str(cfg) in info.value.message
    key = toml.split("\n")[1].split(" =")[0]
    assert key in info.value.message


def test_config_numbers_in_range_are_taken(tmp_path: Path) -> None:
    cfg = tmp_path / "qwenhome" / "config.toml"
    cfg.parent.mkdir()
    cfg.write_text("[pull]\nconnections = 128\nmax_retries = 0\n[network]\nconnect_timeout = 2\nread_timeout = 0.5\n")
    s = load_settings({"HOME": str(tmp_path)}, home=str(tmp_path))
    assert (s.max_connections, s.max_retries, s.timeouts.connect, s.timeouts.read) == (128, 0, 2.0, 0.5)
    assert (s.timeouts.min_rate, s.timeouts.rate_window) == (256.0, 30.0)  # (the defaults)
    cfg.write_text("[network]\nmin_rate = 0\n")
    assert load_settings({"HOME": str(tmp_path)}, home=str(tmp_path)).timeouts.min_rate == 0
    cfg.write_text("[network]\nmin_rate = 1024.5\n")
    assert load_settings({"HOME": str(tmp_path)}, home=str(tmp_path)).timeouts.min_rate == 1024.5
    with pytest.raises(UsageError):
        load_settings({"HOME": str(tmp_path)}, home=str(tmp_path), connections=-1)


def test_mirror_token_from_flag_file_or_environment(tmp_path: Path) -> None:
    env = {MIRROR_TOKEN_ENV: "from-env"}
    assert mirror_token({}) is None
    assert mirror_token({MIRROR_TOKEN_ENV: ""}) is None
    assert mirror_token(env) == "from-env"
    assert mirror_token(env, token="from-flag") == "from-flag"
    f = tmp_path / "token.txt"
    f.write_text("from-file\n")  # as `echo TOKEN > token.txt` writes it
    assert mirror_token(env, token_file=str(f)) == "from-file"


@pytest.mark.parametrize(("flag", "file_text", "env_value", "code"), [
    ("", None, None, "invalid-token"),  # an empty --token would leave the mirror open
    ("two words", None, None, "invalid-token"),
    ("t\u00e9", None, None, "invalid-token"),
    (None, "", None, "invalid-token"),
    (None, "line1\nline2\n", None, "invalid-token"),
    (None, None, " padded ", "invalid-token"),
    ("x", "y", None, "invalid-arguments"),  # both: which one was meant?
])
def test_mirror_token_refuses_what_a_client_cannot_send(
        tmp_path: Path, flag: str | None, file_text: str | None, env_value: str | None, code: str) -> None:
    token_file = None
    if file_text is not None:
        token_file = str(tmp_path / "token.txt")
        Path(token_file).write_text(file_text)
    env = {} if env_value is None else {MIRROR_TOKEN_ENV: env_value}
    with pytest.raises(UsageError) as info:
        mirror_token(env, token=flag, token_file=token_file)
    assert info.value.code == code


def test_mirror_token_file_that_cannot_be_read(tmp_path: Path) -> None:
    for path in (tmp_path / "missing", tmp_path):  # absent; a folder
        with pytest.raises(UsageError) as info:
            mirror_token({}, token_file=str(path))
        assert info.value.code == "token-file-unreadable" and str(path) in info.value.message
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UsageError) as info:
        mirror_token({}, token_file=str(binary))
    assert info.value.code == "token-file-unreadable"
