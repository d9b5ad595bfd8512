"""Stock huggingface_hub and transformers read what qwenhome pulled, offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import RunCli, clean_env
from tests.support.mirror import Mirror

REPO = "Qwen/TinyChat"


@pytest.fixture(scope="session")
def tiny_chat(repos_root: Path) -> Path:
    """A tiny Qwen2 model with a trained tokenizer, published in the mirror's folders."""
    from qwenhome.demo.tinymodel import build_tiny_qwen2

    return build_tiny_qwen2(repos_root / REPO)


def offline_python(home: Path, code: str) -> dict[str, object]:
    """Run ``code`` with only the one-home variables: HF cache = our store, offline."""
    env = clean_env(home, extra={"HF_HUB_CACHE": str(home / "hub"), "HF_HUB_OFFLINE": "1"})
    env.pop("QWEN_HOME", None)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def test_huggingface_hub_and_transformers_read_the_store_offline(
        tiny_chat: Path, mirror: Mirror, run_cli: RunCli, qwen_home: Path) -> None:
    rc, out, err = run_cli(["pull", REPO, "--source", mirror.url])
    assert rc == 0, err
    snapshot = out.strip().splitlines()[-1]

    found = offline_python(qwen_home, f"""
import json
from huggingface_hub import scan_cache_dir, snapshot_download
path = snapshot_download({REPO!r}, local_files_only=True)
info = scan_cache_dir()
[repo] = [r for r in info.repos if r.repo_id == {REPO!r}]
[rev] = list(repo.revisions)
print(json.dumps({{"path": path, "warnings": [str(w) for w in info.warnings], "files": sorted(f.file_name for f in rev.files),
                   "size": repo.size_on_disk, "refs": sorted(rev.refs)}}))
""")
    assert found["path"] == snapshot
    assert found["warnings"] == []
    assert found["refs"] == ["main"]
    expected = sorted(p.name for p in tiny_chat.iterdir() if p.is_file())
    assert found["files"] == expected
    assert found["size"] == sum(p.stat().st_size for p in tiny_chat.iterdir() if p.is_file())

    gen = offline_python(qwen_home, f"""
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained({REPO!r})
model = AutoModelForCausalLM.from_pretrained({REPO!r})
ids = tok.apply_chat_template([{{"role": "user", "content": "hello"}}], add_generation_prompt=True, return_tensors="pt")
ids = ids["input_ids"] if not torch.is_tensor(ids) else ids
out = model.generate(ids, max_new_tokens=4, do_sample=False)
print(json.dumps({{"model_type": model.config.model_type, "new_tokens": int(out.shape[1] - ids.shape[1])}}))
""")
    assert gen["model_type"] == "qwen2"
    assert 1 <= int(str(gen["new_tokens"])) <= 4
