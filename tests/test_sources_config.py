"""Source configuration: config.toml under the home, ``--source`` replacing it
for one command, tokens per source, the probe setting."""

from __future__ import annotations

from pathlib import Path

from qwenhome.config import load_settings

CONFIG = """
[network]
probe_timeout = 0.5

[[sources]]
name = "hub"
url = "https://huggingface.co"

[[sources]]
name = "team"
url = "http://mirror.team.test:8090"
token = "team-token"

[[sources]]
name = "ms"
kind = "modelscope"
url = "https://modelscope.cn"
token = "ms-token"
"""


def write_config(home: Path) -> None:
    (home / "qwenhome").mkdir(parents=True, exist_ok=True)
    (home / "qwenhome" / "config.toml").write_text(CONFIG)


def test_config_file_gives_ordered_sources_with_their_own_tokens_and_hf_token_only_for_the_hub(qwen_home: Path) -> None:
    write_config(qwen_home)
    s = load_settings({"HOME": str(qwen_home.parent), "HF_TOKEN": "hf-token"}, home=str(qwen_home))
    assert [(x.name, x.kind, x.token) for x in s.sources] == [
        ("hub", "hf", "hf-token"), ("team", "hf", "team-token"), ("ms", "modelscope", "ms-token")]
    assert s.timeouts.probe == 0.5


def test_source_flags_replace_the_configured_list_for_one_command(qwen_home: Path) -> None:
    write_config(qwen_home)
    s = load_settings({"HOME": str(qwen_home.parent), "HF_TOKEN": "hf-token"}, home=str(qwen_home),
                      sources=["https://huggingface.co", "http://127.0.0.1:8090", "modelscope:https://modelscope.cn"])
    assert [(x.kind, x.url) for x in s.sources] == [
        ("hf", "https://huggingface.co"), ("hf", "http://127.0.0.1:8090"), ("modelscope", "https://modelscope.cn")]
    # The HF token goes to the Hub's own host only: never to a mirror or ModelScope.
    assert [x.token for x in s.sources] == ["hf-token", None, None]
