"""The one-home environment: the variables that make huggingface_hub,
transformers, diffusers and vLLM agree on the home, as shell exports and as a
child process environment."""

from __future__ import annotations

from collections.abc import Mapping

from .config import Settings

# Legacy or competing cache variables that would send a library elsewhere.
STALE = (
    "TRANSFORMERS_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "PYTORCH_TRANSFORMERS_CACHE",
    "PYTORCH_PRETRAINED_BERT_CACHE",
    "DIFFUSERS_CACHE",
    "HF_HUB_ENABLE_HF_TRANSFER",
)
SHELLS = ("bash", "zsh", "fish", "powershell")


def home_variables(settings: Settings) -> dict[str, str]:
    return {
        "QWEN_HOME": str(settings.home),
        "HF_HOME": str(settings.home),
        "HF_HUB_CACHE": str(settings.hub_cache),
    }


def _quote_sh(v: str) -> str:
    return "'" + v.replace("'", "'\"'\"'") + "'"


def _quote_ps(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


def render_exports(settings: Settings, shell: str = "bash") -> str:
    """Lines to ``eval`` (bash/zsh), ``source`` (fish) or ``Invoke-Expression`` (PowerShell)."""
    values = home_variables(settings)
    lines: list[str] = []
    if shell in ("bash", "zsh", "sh"):
        lines += [f"export {k}={_quote_sh(v)}" for k, v in values.items()]
        lines += [f"unset {k}" for k in STALE]
    elif shell == "fish":
        lines += [f"set -gx {k} {_quote_sh(v)}" for k, v in values.items()]
        lines += [f"set -e {k}" for k in STALE]
    elif shell in ("powershell", "pwsh"):
        lines += [f"$env:{k} = {_quote_ps(v)}" for k, v in values.items()]
        lines += [f"Remove-Item Env:{k} -ErrorAction SilentlyContinue" for k in STALE]
    else:
        raise ValueError(f"unknown shell {shell!r}")
    return "\n".join(lines) + "\n"


def child_env(settings: Settings, base_env: Mapping[str, str], *, offline: bool = True) -> dict[str, str]:
    """A child's environment with the home applied (and offline by default:
    engines load from the home, never from the network)."""
    env = {k: v for k, v in base_env.items() if k not in STALE}
    env.update(home_variables(settings))
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
        env["TRANSFORMERS_OFFLINE"] = "1"
    return env
