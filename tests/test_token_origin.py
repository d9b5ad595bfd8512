"""A source's token goes only to the origin (scheme, host AND port) it was
configured for: never to the same host on another port, never over plain HTTP
when it was given for HTTPS, never to another host, whatever a redirect or a
listing's ``Link`` says. Checked on real servers on 127.0.0.1 that record the
``Authorization`` header of every request they receive: for the metadata
requests, for file transfers in the event loop and in the worker threads, and
for a mirror's pull-through. ``HF_TOKEN`` and ``$HF_HOME/token`` go only to
Hugging Face's own origins."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trustme

from qwenhome.config import Settings, Source, hf_token_for, load_settings
from qwenhome.errors import UsageError
from qwenhome.hub import HubClient
from qwenhome.mirror import CannedResponse, FolderBackend, HashCache, RequestInfo
from qwenhome.net import HttpClient, token_for
from qwenhome.pull import pull
from qwenhome.store import RepoRef
from qwenhome.transfer import EngineConfig
from qwenhome.transfer.retry import Backoff
from tests.support.cli import RunCli
from tests.support.faults import Faults
from tests.support.http import request
from tests.support.mirror import Mirror, start_mirror, start_pull_through
from tests.support.pinned_proxy import PinnedProxy
from tests.support.repos import GeneratedRepo
from tests.support.tls_front import TlsFront
from tests.test_pull import assert_snapshot_matches

TOKEN = "tok-origin-secret-42"
BEARER = f"Bearer {TOKEN}"
WEIGHTS = "model.safetensors"
LOOP = EngineConfig(connections=4, stall_timeout=2.0, backoff=Backoff(base=0.05, cap=0.3), max_retries=4)
THREADS = replace(LOOP, loop_threads=0)


class AuthLog(Faults):
    """Records every request's ``Authorization`` header. With ``redirect_to``
    (a base URL), requests of the route kinds in ``kinds`` are answered with a
    302 to the same target on that base."""

    def __init__(self, redirect_to: str | None = None, kinds: tuple[str, ...] = ("info", "tree", "resolve")) -> None:
        super().__init__()
        self.redirect_to = redirect_to
        self.kinds = kinds
        self.seen: list[tuple[str, str | None]] = []
        self._mu = threading.Lock()

    def on_request(self, info: RequestInfo) -> CannedResponse | None:
        with self._mu:
            self.seen.append((info.target, info.headers.get("Authorization")))
        if self.redirect_to and info.route_kind in self.kinds:
            return CannedResponse(302, b"", {"Location": self.redirect_to + info.target})
        return super().on_request(info)

    def auth(self) -> list[str | None]:
        with self._mu:
            return [a for _, a in self.seen]


@dataclass
class Redirecting:
    """``url``: the source the token is configured for, whose server (``origin``)
    redirects to ``other``, a server on another origin of 127.0.0.1."""

    url: str
    origin: AuthLog
    other: AuthLog
    env: dict[str, str]


def _mirror(repos_root: Path, hash_cache: HashCache, log: AuthLog) -> Mirror:
    return start_mirror(FolderBackend(repos_root, hashes=hash_cache), faults=log)


@pytest.fixture(params=["port", "scheme", "host"])
def redirecting(request: pytest.FixtureRequest, repos_root: Path, hash_cache: HashCache, small_repo: GeneratedRepo,
                tmp_path: Path) -> Iterator[Redirecting]:
    """port: http://127.0.0.1:A redirects to http://127.0.0.1:B.
    scheme: https://127.0.0.1:F redirects to http://127.0.0.1:F (the same port
    number; a front speaks TLS to one server and plain HTTP to another).
    host: http://127.0.0.1:A redirects to http://localhost:B."""
    origin, other = AuthLog(), AuthLog()
    with _mirror(repos_root, hash_cache, origin) as a, _mirror(repos_root, hash_cache, other) as b:
        if request.param == "scheme":
            ca = trustme.CA()
            ca_file = tmp_path / "ca.pem"
            ca.cert_pem.write_to_path(str(ca_file))
            with TlsFront(a.server.port, ca, plain_port=b.server.port) as front:
                origin.redirect_to = f"http://127.0.0.1:{front.port}"
                yield Redirecting(front.url, origin, other, {"SSL_CERT_FILE": str(ca_file)})
            return
        origin.redirect_to = (f"http://127.0.0.1:{b.server.port}" if request.param == "port"
                              else f"http://localhost:{b.server.port}")
        yield Redirecting(a.url, origin, other, {})


def configured(home: Path, url: str, env: dict[str, str]) -> Settings:
    """Settings whose one source is ``url`` with ``TOKEN``, from config.toml."""
    config = home / "qwenhome" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[[sources]]\nname = "team"\nurl = "{url}"\ntoken = "{TOKEN}"\n')
    return load_settings({"HOME": str(home.parent), **env}, home=str(home))


def assert_token_stayed_home(origin: AuthLog, other: AuthLog) -> None:
    assert origin.auth() and all(a == BEARER for a in origin.auth()), origin.seen
    assert other.seen, "the redirects were followed"
    leaked = [(target, a) for target, a in other.seen if a is not None]
    assert not leaked, f"the token reached another origin: {leaked}"


@pytest.mark.parametrize("config", [LOOP, THREADS], ids=["event-loop", "worker-threads"])
def test_token_never_follows_a_redirect_to_another_origin(qwen_home: Path, small_repo: GeneratedRepo,
                                                          redirecting: Redirecting, config: EngineConfig) -> None:
    """Metadata and every file are redirected: the token reaches the source's
    own server on each request and the other origin on none."""
    result = pull(configured(qwen_home, redirecting.url, redirecting.env), RepoRef.parse("Org/Small"), config=config)
    assert_snapshot_matches(qwen_home, small_repo)
    assert_token_stayed_home(redirecting.origin, redirecting.other)
    # The path under test really moved the files.
    threaded = int(result.stats.get("threaded_files", 0))
    assert threaded == 0 if config.loop_threads else threaded > 0, result.stats
    assert any("/resolve/" in target for target, _ in redirecting.other.seen)


def test_token_never_follows_a_tree_listing_link_to_another_origin(
        repos_root: Path, hash_cache: HashCache, small_repo: GeneratedRepo) -> None:
    """A revision answer without sizes sends the client to the tree listing,
    whose ``Link: rel="next"`` names another port: the next page is asked
    there without the token."""
    other_log = AuthLog()
    with _mirror(repos_root, hash_cache, other_log) as other:
        commit = HubClient(Source("o", "hf", other.url), HttpClient()).manifest(RepoRef.parse("Org/Small")).commit
        api = "/api/models/Org/Small"
        origin = AuthLog()
        origin.respond_json({"sha": commit, "siblings": [{"rfilename": "config.json"}]},
                            path=f"{api}/revision/main")
        origin.respond_json([], path=f"{api}/tree/{commit}", headers={
            "Link": f'<{other.url}{api}/tree/{commit}?recursive=true&expand=false>; rel="next"'})
        with _mirror(repos_root, hash_cache, origin) as source:
            other_log.seen.clear()
            manifest = HubClient(Source("team", "hf", source.url, TOKEN), HttpClient()).manifest(
                RepoRef.parse("Org/Small"))
    assert {f.path for f in manifest.files} == set(small_repo.files)
    assert_token_stayed_home(origin, other_log)


def test_pull_through_never_sends_its_upstream_token_to_the_upstreams_cdn_port(
        qwen_home: Path, repos_root: Path, hash_cache: HashCache, small_repo: GeneratedRepo) -> None:
    cdn_log = AuthLog()
    with _mirror(repos_root, hash_cache, cdn_log) as cdn:
        up_log = AuthLog(redirect_to=f"http://127.0.0.1:{cdn.server.port}", kinds=("resolve",))
        with _mirror(repos_root, hash_cache, up_log) as upstream:
            settings = configured(qwen_home, upstream.url, {})
            mirror, _ = start_pull_through(settings)
            with mirror:
                got = request(mirror.url, path=f"/Org/Small/resolve/main/{WEIGHTS}", timeout=30)
    assert got.status == 200
    assert hashlib.sha256(got.body).hexdigest() == small_repo.files[WEIGHTS].sha256
    assert_token_stayed_home(up_log, cdn_log)


# -- the rule itself ---------------------------------------------------------------------
@pytest.mark.parametrize(("url", "sent"), [
    ("https://hub.example:8443/api/x", True),
    ("https://HUB.example:8443/other/path?q=1", True),
    ("https://hub.example/api/x", False),  # another port (443)
    ("https://hub.example:8444/api/x", False),
    ("http://hub.example:8443/api/x", False),  # plain HTTP on the same host and port
    ("https://cdn.hub.example:8443/api/x", False),
    ("https://example:8443/api/x", False),
    ("ftp://hub.example:8443/x", False),
    ("not a url", False),
])
def test_token_for_compares_scheme_host_and_port(url: str, sent: bool) -> None:
    source = Source("s", "hf", "https://hub.example:8443/mirror", TOKEN)
    assert token_for(source.token, source.url, url) == (TOKEN if sent else None)
    assert token_for(None, source.url, source.url) is None


def test_default_ports_are_the_same_origin() -> None:
    assert token_for(TOKEN, "https://hub.example", "https://hub.example:443/x") == TOKEN
    assert token_for(TOKEN, "http://hub.example:80", "http://hub.example/x") == TOKEN
    assert token_for(TOKEN, "http://hub.example", "https://hub.example/x") is None


# -- HF_TOKEN and $HF_HOME/token --------------------------------------------------------
@pytest.mark.parametrize(("url", "sent"), [
    ("https://huggingface.co", True),
    ("https://hf.co", True),
    ("https://huggingface.co:443", True),
    ("http://huggingface.co", False),  # never in the clear
    ("https://huggingface.co:8443", False),
    ("https://huggingface.co.evil.example", False),
    ("https://hf-mirror.com", False),
    ("http://127.0.0.1:8090", False),
])
def test_hf_token_goes_only_to_hugging_face_origins(url: str, sent: bool) -> None:
    assert hf_token_for(url, "hf_x") == ("hf_x" if sent else None)


def test_hf_home_token_file_is_read_and_sent_only_to_the_hugging_face_origin(
        tmp_path: Path, repos_root: Path, hash_cache: HashCache, small_repo: GeneratedRepo) -> None:
    """``$HF_HOME/token`` is read and sent to https://huggingface.co (reached
    here through a proxy that pins it to a local TLS front with a test CA),
    never to the team mirror, neither as a configured source nor when
    huggingface.co redirects a download there."""
    hf_home = tmp_path / "hf-home"
    hf_home.mkdir()
    (hf_home / "token").write_text("hf_from_file_123\n")
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    hub_log, team_log = AuthLog(), AuthLog()
    with _mirror(repos_root, hash_cache, hub_log) as hub, _mirror(repos_root, hash_cache, team_log) as team, \
            TlsFront(hub.server.port, ca, names=("huggingface.co",)) as front, \
            PinnedProxy({"huggingface.co:443": front.port}) as proxy:
        hub_log.redirect_to, hub_log.kinds = team.url, ("resolve",)  # the team mirror as the hub's CDN
        home = tmp_path / "qh"
        config = home / "qwenhome" / "config.toml"
        config.parent.mkdir(parents=True)
        config.write_text('[[sources]]\nname = "hub"\nurl = "https://huggingface.co"\n'
                          f'[[sources]]\nname = "team"\nurl = "{team.url}"\n')
        env = {"HOME": str(tmp_path), "HF_HOME": str(hf_home), "QWEN_HOME": str(home),
               "HTTPS_PROXY": proxy.url, "SSL_CERT_FILE": str(ca_file)}
        settings = load_settings(env)
        assert [(s.name, s.token) for s in settings.sources] == [("hub", "hf_from_file_123"), ("team", None)]
        assert load_settings({"HOME": str(tmp_path), "HF_HOME": str(hf_home)}).sources[0].token == "hf_from_file_123"
        result = pull(settings, RepoRef.parse("Org/Small"), config=THREADS)
    assert result.source == "hub" and "huggingface.co:443" in proxy.tunnels
    assert_snapshot_matches(home, small_repo)
    assert hub_log.auth() and set(hub_log.auth()) == {"Bearer hf_from_file_123"}
    assert team_log.seen and not any(a for a in team_log.auth()), team_log.seen


# -- a token no HTTP header can carry ------------------------------------------------------

def test_a_configured_token_no_header_can_carry_stops_the_pull_before_any_request(
        run_cli: RunCli, qwen_home: Path, mirror: Mirror) -> None:
    """A token pasted with a character outside visible ASCII (here a euro sign)
    is a configuration error, exit 2, found before any request: not a network
    error retried against the server, and never echoed."""
    config = qwen_home / "qwenhome" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[[sources]]\nurl = "{mirror.url}"\ntoken = "hf_t\u20acst"\n', encoding="utf-8")
    res = run_cli(["pull", "Org/Small"])
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"error[invalid-token]: {config}: sources[0].token: the token cannot be sent in an HTTP header: "
        "character 5 (U+20AC) is not visible ASCII (hint: copy the token again, without quotes or spaces; "
        "a Hugging Face token looks like hf_...)"]
    assert not mirror.faults.records(), "refused before any request"


@pytest.mark.parametrize(("variable", "value", "why"), [
    ("HF_TOKEN", "\u201chf_abc\u201d", "character 1 (U+201C)"),  # typographic quotes pasted with it
    ("HUGGING_FACE_HUB_TOKEN", "hf_abc def", "character 7 (U+0020)"),
    ("HF_TOKEN", "hf_abc\ndef", "character 7 (U+000A)"),  # would split the header
    ("token file", b"hf_\xffabc\n", "character 4 (U+FFFD)"),  # not UTF-8
])
def test_an_hf_token_no_header_can_carry_is_invalid_token_naming_where_it_came_from(
        tmp_path: Path, variable: str, value: str | bytes, why: str) -> None:
    env = {"HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf")}
    if isinstance(value, bytes):
        (tmp_path / "hf").mkdir()
        (tmp_path / "hf" / "token").write_bytes(value)
        variable = str(tmp_path / "hf" / "token")
    else:
        env[variable] = value
    # The default source, https://huggingface.co, is where it would be sent; nothing is.
    with pytest.raises(UsageError) as info:
        load_settings(env, home=str(tmp_path / "qh"))
    assert (info.value.code, info.value.exit_code) == ("invalid-token", 2)
    assert info.value.message.startswith(f"{variable}: the token cannot be sent in an HTTP header: {why} ")
    assert "hf_abc" not in info.value.message, "the token is never echoed"
    # A token that no source will send stops nothing.
    settings = load_settings(env, home=str(tmp_path / "qh"), sources=["http://127.0.0.1:9"])
    assert [s.token for s in settings.sources] == [None]


def test_whitespace_around_hf_token_is_dropped_as_huggingface_hub_does(tmp_path: Path) -> None:
    settings = load_settings({"HOME": str(tmp_path), "HF_TOKEN": " hf_abc\n"}, home=str(tmp_path / "qh"))
    assert [(s.url, s.token) for s in settings.sources] == [("https://huggingface.co", "hf_abc")]
