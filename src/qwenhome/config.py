"""Home and Settings: the only module that reads the environment.

The CLI (or any embedding program) calls :func:`load_settings` once with the
process environment and its flags; everything below receives the frozen
:class:`Settings` and never looks at ``os.environ`` itself.

Home precedence (DESIGN.md): ``--home`` > ``QWEN_HOME`` > ``HF_HOME`` >
``$XDG_CACHE_HOME/huggingface`` > ``~/.cache/huggingface``. When neither
``--home`` nor ``QWEN_HOME`` is given but ``HF_HUB_CACHE`` is, the store is
``HF_HUB_CACHE`` itself, because the user's other tools already look there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError, UsageError

DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_MODELSCOPE_ENDPOINT = "https://modelscope.cn"
STATE_DIRNAME = "qwenhome"
CONFIG_FILENAME = "config.toml"

# Hosts an HF token belongs to (over HTTPS, port 443). A token is never sent
# anywhere else unless the user puts it on that source explicitly in config.toml.
HF_TOKEN_HOSTS = ("huggingface.co", "hf.co")

# Environment variables that the doctor and `env` reason about. Only these are
# copied into Settings, so that nothing below this module needs os.environ.
OBSERVED_ENV = (
    "QWEN_HOME", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE",
    "HF_DATASETS_CACHE", "DIFFUSERS_CACHE", "PYTORCH_TRANSFORMERS_CACHE", "PYTORCH_PRETRAINED_BERT_CACHE",
    "XDG_CACHE_HOME", "HF_ENDPOINT", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
    "HF_HUB_ENABLE_HF_TRANSFER", "HF_HUB_DISABLE_XET", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
    "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "all_proxy",
    "no_proxy", "MODELSCOPE_CACHE", "MODELSCOPE_ENDPOINT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE", "HOME", "USERPROFILE",
)

# Variables that name a CA bundle to trust instead of the system's, first set
# wins: OpenSSL's own, then those of requests and curl, so that a machine set
# up for those tools (behind a TLS-intercepting proxy, say) works here too.
CA_BUNDLE_ENV = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")

TRUE_VALUES = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class Source:
    """One place to fetch from. ``kind`` is ``hf`` (Hub protocol) or ``modelscope``."""

    name: str
    kind: str
    url: str
    token: str | None = field(default=None, repr=False)
    # False for a source given only by its URL (--source, or config.toml
    # without a name): messages then name it by that URL, not by "hf".
    named: bool = field(default=True, compare=False)

    @property
    def host(self) -> str:
        return (urlsplit(self.url).hostname or "").lower()

    @property
    def label(self) -> str:
        """How progress lines and errors name the source: its configured
        name, or the URL it was given by (without any user:password@)."""
        if self.named:
            return self.name
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "url": self.url, "token": bool(self.token)}


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    read: float = 30.0
    # A transfer with no byte for this long is considered stalled and retried.
    stall: float = 15.0
    # Overall bound of the parallel reachability probe that decides offline
    # when the cache could answer (a pull with nothing cached waits longer).
    probe: float = 0.8


@dataclass(frozen=True)
class Settings:
    """Everything a qwenhome command needs to know about its world. Immutable."""

    home: Path
    hub_cache: Path
    state_dir: Path
    sources: tuple[Source, ...]
    offline_forced: bool = False
    timeouts: Timeouts = Timeouts()
    max_connections: int = 0  # 0: choose automatically
    max_retries: int = 8
    home_origin: str = "default"  # which rule chose the home: flag, QWEN_HOME, HF_HOME, HF_HUB_CACHE, default
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    config_file: Path | None = None

    @property
    def partials_dir(self) -> Path:
        return self.state_dir / "partials"

    @property
    def locks_dir(self) -> Path:
        return self.state_dir / "locks"

    def with_sources(self, sources: Sequence[Source]) -> Settings:
        return replace(self, sources=tuple(sources))

    def with_offline(self, offline: bool) -> Settings:
        return replace(self, offline_forced=offline)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in TRUE_VALUES


def _expand(p: str) -> Path:
    return Path(os.path.expanduser(p)).absolute()


def resolve_home(env: Mapping[str, str], flag_home: str | None = None) -> tuple[Path, Path, str]:
    """Return ``(home, hub_cache, origin)`` following DESIGN.md's precedence."""
    if flag_home:
        home = _expand(flag_home)
        return home, home / "hub", "flag"
    if env.get("QWEN_HOME"):
        home = _expand(env["QWEN_HOME"])
        return home, home / "hub", "QWEN_HOME"
    if env.get("HF_HOME"):
        home = _expand(env["HF_HOME"])
        origin = "HF_HOME"
    else:
        xdg = env.get("XDG_CACHE_HOME")
        base = _expand(xdg) if xdg else _expand(env.get("HOME", "~")) / ".cache"
        home = base / "huggingface"
        origin = "default"
    hub_env = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if hub_env:
        return home, _expand(hub_env), "HF_HUB_CACHE"
    return home, home / "hub", origin


def parse_source_spec(spec: str, index: int = 0) -> Source:
    """Parse ``--source`` values: ``URL`` (Hub protocol) or ``modelscope:URL``."""
    kind = "hf"
    url = spec.strip()
    for prefix in ("modelscope:", "ms:"):
        if url.lower().startswith(prefix):
            kind, url = "modelscope", url[len(prefix):]
    if url.lower().startswith("hf:"):
        url = url[3:]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"invalid source {spec!r}",
            code="invalid-source",
            hint="give an http(s) URL, e.g. --source https://hf-mirror.com or --source modelscope:https://modelscope.cn",
        )
    return Source(name=f"{kind}{index}" if index else kind, kind=kind, url=url.rstrip("/"), named=False)


def _token_file(home: Path, env: Mapping[str, str]) -> str | None:
    # huggingface_hub keeps the token in $HF_HOME/token; reuse it.
    candidates = []
    if env.get("HF_HOME"):
        candidates.append(_expand(env["HF_HOME"]) / "token")
    candidates.append(home / "token")
    for path in candidates:
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if text:
            return text
    return None


def hf_token_for(url: str, token: str | None) -> str | None:
    """The HF token goes only to Hugging Face's own origins: HTTPS on port 443
    of its hosts (never in the clear, never another port)."""
    parts = urlsplit(url)
    try:
        port = parts.port or 443
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if token and parts.scheme == "https" and port == 443 \
            and any(host == h or host.endswith("." + h) for h in HF_TOKEN_HOSTS):
        return token
    return None


def ca_bundle(env: Mapping[str, str]) -> tuple[str, str] | None:
    """``(path, variable)``: the CA bundle (a file, or a folder of certificates)
    that TLS connections trust, and the variable that named it; None: the
    system's certificates."""
    for name in CA_BUNDLE_ENV:
        value = (env.get(name) or "").strip()
        if value:
            return value, name
    return None


def default_sources(env: Mapping[str, str], hf_token: str | None) -> list[Source]:
    endpoint = (env.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT).rstrip("/")
    return [Source("hf", "hf", endpoint, hf_token_for(endpoint, hf_token), named=not env.get("HF_ENDPOINT"))]


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return {}  # the usual case: the parser is not even imported (start-up time)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}", path=path) from exc
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", path=path) from exc


def _sources_from_config(data: dict[str, Any], path: Path) -> list[Source] | None:
    raw = data.get("sources")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: 'sources' must be an array of tables", path=path)
    out: list[Source] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or "url" not in item:
            raise ConfigError(f"{path}: sources[{i}] needs a url", path=path)
        kind = str(item.get("kind", "hf"))
        if kind not in ("hf", "modelscope"):
            raise ConfigError(f"{path}: sources[{i}].kind must be 'hf' or 'modelscope'", path=path)
        src = parse_source_spec(("modelscope:" if kind == "modelscope" else "") + str(item["url"]), i)
        token = item.get("token")
        out.append(Source(str(item.get("name", src.name)), kind, src.url, str(token) if token else None,
                          named="name" in item))
    return out


def load_settings(
    env: Mapping[str, str],
    *,
    home: str | None = None,
    sources: Sequence[str] = (),
    offline: bool = False,
    connections: int | None = None,
) -> Settings:
    """Build the frozen Settings from an environment mapping and CLI flags."""
    home_path, hub_cache, origin = resolve_home(env, home)
    state_dir = home_path / STATE_DIRNAME
    config_file = state_dir / CONFIG_FILENAME
    data = _load_toml(config_file)
    hf_token = env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN") or _token_file(home_path, env)

    if sources:
        srcs = [parse_source_spec(s, i) for i, s in enumerate(sources)]
    else:
        srcs = _sources_from_config(data, config_file) or default_sources(env, hf_token)
    # A Hub-protocol source without its own token gets HF_TOKEN, and only when
    # it is one of Hugging Face's hosts.
    srcs = [replace(s, token=hf_token_for(s.url, hf_token)) if s.kind == "hf" and not s.token else s for s in srcs]

    pull_cfg = data.get("pull", {}) if isinstance(data.get("pull"), dict) else {}
    net_cfg = data.get("network", {}) if isinstance(data.get("network"), dict) else {}
    timeouts = Timeouts(
        connect=float(net_cfg.get("connect_timeout", Timeouts.connect)),
        read=float(net_cfg.get("read_timeout", Timeouts.read)),
        stall=float(net_cfg.get("stall_timeout", Timeouts.stall)),
        probe=float(net_cfg.get("probe_timeout", Timeouts.probe)),
    )
    offline_forced = offline or _truthy(env.get("HF_HUB_OFFLINE")) or _truthy(env.get("TRANSFORMERS_OFFLINE"))
    observed = {k: env[k] for k in OBSERVED_ENV if k in env}
    return Settings(
        home=home_path,
        hub_cache=hub_cache,
        state_dir=state_dir,
        sources=tuple(srcs),
        offline_forced=offline_forced,
        timeouts=timeouts,
        max_connections=int(connections if connections is not None else pull_cfg.get("connections", 0)),
        max_retries=int(pull_cfg.get("max_retries", 8)),
        home_origin=origin,
        env=MappingProxyType(observed),
        config_file=config_file,
    )
