"""Home and Settings: the only module that reads the environment.

The CLI (or any embedding program) calls :func:`load_settings` once with the
process environment and its flags; everything below receives the frozen
:class:`Settings` and never looks at ``os.environ`` itself.

Home precedence (as the README states it): ``--home`` > ``QWEN_HOME`` > ``HF_HOME`` >
``$XDG_CACHE_HOME/huggingface`` > ``~/.cache/huggingface``. When neither
``--home`` nor ``QWEN_HOME`` is given but ``HF_HUB_CACHE`` is, the store is
``HF_HUB_CACHE`` itself, because the user's other tools already look there.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError, UsageError

log = logging.getLogger(__name__)

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

# Bounds of the numbers a user sets (flags and config.toml).
MAX_CONNECTIONS = 128  # the adaptive controller's own ceiling (transfer.engine.EngineConfig)
MAX_RETRIES = 100
# [network] min_rate, bytes/s: past a gigabyte a second no request qualifies.
MAX_MIN_RATE = 1e9
# `mirror serve --max-connections`: connections served at once on each port
# (each is a thread and a descriptor); `--head-timeout`: seconds a request
# head may take from its first byte (slow-loris). Defaults, then bounds.
MIRROR_CONNECTIONS = 256
MIRROR_CONNECTIONS_MOST = 4096
MIRROR_HEAD_TIMEOUT = 10.0
MIRROR_HEAD_TIMEOUT_RANGE = (0.1, 3600.0)

# `mirror serve`'s bearer token, when not given as --token (which `ps` shows to everyone).
MIRROR_TOKEN_ENV = "QWENHOME_MIRROR_TOKEN"


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
        parts = urlsplit(self.url)  # (without any user:password@, as in label)
        url = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        return {"name": self.name, "kind": self.kind, "url": url, "token": bool(self.token)}


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    read: float = 30.0
    # A transfer with no byte for this long is considered stalled and retried.
    stall: float = 15.0
    # A request bringing under min_rate bytes/s over rate_window seconds is a
    # stall too (a trickled body is never silent; see transfer/pace.py); a
    # min_rate of 0 turns the rule off.
    rate_window: float = 30.0
    min_rate: float = 256.0
    # Overall bound of the parallel reachability probe that decides offline
    # when the cache could answer (a pull with nothing cached waits longer).
    probe: float = 0.8
    # How long a pull waits for a file another process is fetching before it
    # gives up with lock-timeout (a holder that is stopped or hung).
    lock: float = 3600.0


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
    # Xet-backed files may come through the CAS (xorbs, local chunks); off
    # with HF_HUB_DISABLE_XET=1 or `xet = false` under [pull] in config.toml.
    xet: bool = True

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


def _nearest_existing(path: Path) -> Path | None:
    """``path`` or its nearest ancestor that exists; None when that cannot be
    told (a folder on the way is not readable: later steps report it)."""
    p = path
    while True:
        try:
            p.stat()
            return p
        except (FileNotFoundError, NotADirectoryError):  # (NotADirectory: a file further up)
            if p == p.parent:
                return None
            p = p.parent
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return p  # a link that leads back to itself: there, and no folder
            if exc.errno == errno.ENAMETOOLONG:
                raise UsageError(f"{path} cannot be a folder: its name is too long ({len(str(path))} characters)",
                                 code="invalid-home", hint="point --home (or QWEN_HOME) at a shorter path") from exc
            return None  # permission denied: later steps report it
        except ValueError:  # a NUL byte
            return None


def check_home_folders(home: Path, hub_cache: Path, origin: str) -> None:
    """Raise ``home-not-a-folder`` when a file stands where the home, its state
    folder or its store must be a folder (or where one of their parents must)."""
    chosen_by = {"flag": "--home", "default": "--home (or QWEN_HOME)"}.get(origin, origin)
    for path, role in ((home, "the home"), (home / STATE_DIRNAME, "qwenhome's state folder"),
                       (hub_cache, "the store")):
        p = _nearest_existing(path)  # the nearest part that exists must be a folder
        if p is not None and not p.is_dir():
            where = "" if p == path else f" (needed for {path})"
            raise ConfigError(
                f"{p} is not a folder, but {role} must be one{where}",
                code="home-not-a-folder",
                hint=f"move or rename that file, or point {chosen_by} at another folder",
                path=p,
            )


def resolve_home(env: Mapping[str, str], flag_home: str | None = None) -> tuple[Path, Path, str]:
    """Return ``(home, hub_cache, origin)``: ``--home`` > ``QWEN_HOME`` >
    ``HF_HOME`` > the default, with ``HF_HUB_CACHE`` as the store when neither
    of the first two is given."""
    if flag_home is not None and not flag_home.strip():
        # (an empty --home, often an unset shell variable, must not mean "the default home")
        raise UsageError("--home is empty", code="invalid-home", hint="give a folder, e.g. --home ~/qwen")
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


LOG_VARIABLE = "QWENHOME_LOG"
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def log_level(env: Mapping[str, str], verbose: int = 0) -> int | None:
    """How much of qwenhome's log goes to stderr: ``QWENHOME_LOG`` (debug,
    info, warning or error) or ``-v`` (info), ``-vv`` (debug), whichever says
    more. None when neither is given: logging stays as Python leaves it (a
    warning or an error would still show, as before)."""
    levels = [logging.INFO if verbose == 1 else logging.DEBUG] if verbose > 0 else []
    raw = env.get(LOG_VARIABLE, "").strip()
    if raw:
        if raw.lower() not in LOG_LEVELS:
            raise ConfigError(f"{LOG_VARIABLE}={raw!r} is not a log level", code="invalid-log-level",
                              hint=f"use one of {', '.join(LOG_LEVELS)}, or unset {LOG_VARIABLE}")
        levels.append(LOG_LEVELS[raw.lower()])
    return min(levels) if levels else None


def _http_url(url: str) -> bool:
    """Whether ``url`` is an http(s) URL with a host and a valid port (urlsplit
    raises ValueError on ``http://[::1`` or a port out of range)."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def parse_source_spec(spec: str, index: int = 0) -> Source:
    """Parse ``--source`` values: ``URL`` (Hub protocol) or ``modelscope:URL``."""
    kind = "hf"
    url = spec.strip()
    for prefix in ("modelscope:", "ms:"):
        if url.lower().startswith(prefix):
            kind, url = "modelscope", url[len(prefix):]
    if url.lower().startswith("hf:"):
        url = url[3:]
    if not _http_url(url):
        raise UsageError(
            f"invalid source {spec!r}",
            code="invalid-source",
            hint="give an http(s) URL, e.g. --source https://hf-mirror.com or --source modelscope:https://modelscope.cn",
        )
    return Source(name=f"{kind}{index}" if index else kind, kind=kind, url=url.rstrip("/"), named=False)


def _token_file(home: Path, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(token, the file it came from): huggingface_hub keeps it in $HF_HOME/token; reuse it."""
    candidates = []
    if env.get("HF_HOME"):
        candidates.append(_expand(env["HF_HOME"]) / "token")
    candidates.append(home / "token")
    for path in candidates:
        try:
            # Bytes that are not UTF-8 become U+FFFD: refused as unsendable, with the file named.
            text = path.read_text(encoding="utf-8", errors="replace").strip()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.debug("token file %s not read: %s", path, exc)
            continue
        if text:
            return text, str(path)
    return None


def _unsendable(token: str) -> str | None:
    """Why ``token`` cannot go in an HTTP header as one bearer token, or None.
    Visible ASCII only: anything else (a typographic quote pasted with it, a
    space, a line break) would fail in the header encoder at every request, or
    split the header."""
    for i, c in enumerate(token):
        if not "!" <= c <= "~":
            return f"character {i + 1} (U+{ord(c):04X}) is not visible ASCII"
    return None if token else "it is empty"


def _sendable(token: str, origin: str, *, path: Path | None = None) -> str:
    """``token``, checked before any request (see :func:`_unsendable`); the error
    names where it came from, never the token itself."""
    why = _unsendable(token)
    if why is None:
        return token
    message = f"{origin}: the token cannot be sent in an HTTP header: {why}"
    hint = "copy the token again, without quotes or spaces; a Hugging Face token looks like hf_..."
    if path is not None:
        raise ConfigError(message, code="invalid-token", hint=hint, path=path)
    raise UsageError(message, code="invalid-token", hint=hint)


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
    endpoint = (env.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT).strip().rstrip("/")
    if not _http_url(endpoint):
        raise UsageError(f"HF_ENDPOINT={env.get('HF_ENDPOINT', '')[:200]!r} is not an http(s) URL", code="invalid-source",
                         hint="set HF_ENDPOINT to a Hub endpoint such as https://hf-mirror.com, or unset it")
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
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read {path}: not UTF-8 text (byte {exc.start + 1})", path=path) from exc
    except RecursionError as exc:  # (arrays or tables nested thousands deep)
        raise ConfigError(f"cannot read {path}: nested too deep", path=path) from exc
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
        if token:
            token = _sendable(str(token), f"{path}: sources[{i}].token", path=path)
        out.append(Source(str(item.get("name", src.name)), kind, src.url, str(token) if token else None,
                          named="name" in item))
    return out


def mirror_token(env: Mapping[str, str], *, token: str | None = None, token_file: str | None = None) -> str | None:
    """The bearer token ``mirror serve`` requires of clients, or None (no token):
    ``--token``, else what ``--token-file`` holds (one token; surrounding whitespace
    and the final newline ignored), else ``$QWENHOME_MIRROR_TOKEN``.
    The file and the variable keep the secret out of the process list."""
    if token is not None and token_file is not None:
        raise UsageError("give the token once: --token or --token-file", code="invalid-arguments",
                         hint="prefer --token-file (or QWENHOME_MIRROR_TOKEN): --token shows in `ps`")
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as f:
                value = f.read(64 * 1024).strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --token-file {token_file}: {getattr(exc, 'strerror', None) or exc}",
                             code="token-file-unreadable",
                             hint="give a readable text file that holds only the token") from exc
        origin = f"--token-file {token_file}"
    elif token is not None:
        value, origin = token, "--token"
    else:
        value, origin = env.get(MIRROR_TOKEN_ENV, ""), MIRROR_TOKEN_ENV
        if not value:
            return None  # unset or empty: no token required
    # Clients send it in a header: visible ASCII only, one token (an empty one
    # would silently leave the mirror open).
    if _unsendable(value) is not None:
        raise UsageError(f"{origin}: the token must be one word of visible ASCII characters, not empty",
                         code="invalid-token", hint="e.g. `openssl rand -hex 32 > token.txt`, then --token-file token.txt")
    return value


def _number(table: Mapping[str, Any], key: str, default: float, lo: float, hi: float, path: Path,
            *, whole: bool = False) -> float:
    """``table[key]`` from config.toml, checked to be a number in ``[lo, hi]``."""
    value = table.get(key, default)
    ok = isinstance(value, int) if whole else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or not lo <= value <= hi:  # (NaN fails too)
        kind = "a whole number" if whole else "a number"
        raise ConfigError(f"{path}: {key} = {value!r}; it must be {kind} from {lo:g} to {hi:g}", path=path)
    return float(value)


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
    check_home_folders(home_path, hub_cache, origin)
    state_dir = home_path / STATE_DIRNAME
    config_file = state_dir / CONFIG_FILENAME
    data = _load_toml(config_file)
    # Surrounding whitespace dropped, as huggingface_hub does (and as in the token file).
    named = next(((env[k].strip(), k) for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN") if env.get(k, "").strip()), None)
    hf_token, token_origin = named or _token_file(home_path, env) or (None, "")

    if sources:
        srcs = [parse_source_spec(s, i) for i, s in enumerate(sources)]
    else:
        srcs = _sources_from_config(data, config_file) or default_sources(env, hf_token)
    # A Hub-protocol source without its own token gets HF_TOKEN, and only when
    # it is one of Hugging Face's hosts.
    srcs = [replace(s, token=hf_token_for(s.url, hf_token)) if s.kind == "hf" and not s.token else s for s in srcs]
    if hf_token is not None and any(s.token == hf_token for s in srcs):
        _sendable(hf_token, token_origin)  # only a token that will be sent stops the command

    pull_cfg = data.get("pull", {}) if isinstance(data.get("pull"), dict) else {}
    net_cfg = data.get("network", {}) if isinstance(data.get("network"), dict) else {}
    day = 86400.0
    timeouts = Timeouts(
        connect=float(_number(net_cfg, "connect_timeout", Timeouts.connect, 0.001, day, config_file)),
        read=float(_number(net_cfg, "read_timeout", Timeouts.read, 0.001, day, config_file)),
        stall=float(_number(net_cfg, "stall_timeout", Timeouts.stall, 0.001, day, config_file)),
        rate_window=float(_number(net_cfg, "rate_window", Timeouts.rate_window, 0.001, day, config_file)),
        min_rate=float(_number(net_cfg, "min_rate", Timeouts.min_rate, 0, MAX_MIN_RATE, config_file)),
        probe=float(_number(net_cfg, "probe_timeout", Timeouts.probe, 0.001, day, config_file)),
    )
    if connections is None:
        connections = int(_number(pull_cfg, "connections", 0, 0, MAX_CONNECTIONS, config_file, whole=True))
    elif not 0 <= connections <= MAX_CONNECTIONS:
        raise UsageError(f"connections must be from 0 (adaptive) to {MAX_CONNECTIONS}, not {connections}",
                         code="invalid-arguments")
    offline_forced = offline or _truthy(env.get("HF_HUB_OFFLINE")) or _truthy(env.get("TRANSFORMERS_OFFLINE"))
    xet = pull_cfg.get("xet", True)
    if not isinstance(xet, bool):
        raise ConfigError(f"{config_file}: xet = {xet!r}; it must be true or false", path=config_file)
    observed = {k: env[k] for k in OBSERVED_ENV if k in env}
    return Settings(
        home=home_path,
        hub_cache=hub_cache,
        state_dir=state_dir,
        sources=tuple(srcs),
        offline_forced=offline_forced,
        timeouts=timeouts,
        max_connections=connections,
        max_retries=int(_number(pull_cfg, "max_retries", 8, 0, MAX_RETRIES, config_file, whole=True)),
        home_origin=origin,
        env=MappingProxyType(observed),
        config_file=config_file,
        xet=xet and not _truthy(env.get("HF_HUB_DISABLE_XET")),
    )
