"""The Xet hosts a Hub source sends a pull to, found the way the client finds
them, each checked step by step, and the fix when one fails.

A pull learns them in this order (:mod:`qwenhome.hub.xet`): a Xet-backed
file's resolve answer links the token endpoint (``rel="xet-auth"``), the
token names the CAS (``casUrl``), a reconstruction names the xorb hosts (its
signed URLs). :func:`probe_xet` asks the same questions about one file of a
repository (its smallest LFS file, and a one-byte reconstruction) and, as
soon as a host is known, probes it with the reachability probe's own steps
(DNS, TCP, TLS, an HTTP status line: :func:`qwenhome.sources.probe_sources`).
The whole is bounded by ``XET_FACTOR`` times ``settings.timeouts.probe``;
what has not answered by then is reported as such.

:func:`.xetadvice.advice` words a failing host and its fix, as the doctor's
own Xet checks (:mod:`.xet`) do. ``qwenhome sources --probe`` shows the result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from ..config import Settings, Source
from ..errors import QwenhomeError
from ..hub.hf import HubClient
from ..hub.xet import XetSession
from ..net import HttpClient
from ..repo.ref import RepoRef
from ..sources import ProbeResult, probe_sources
from .xetadvice import ROLES, advice

log = logging.getLogger(__name__)

XET_FACTOR = 5.0  # the Xet check's bound, in probe time-outs: four requests and the hosts' probes
# What stays unknown when the questions stop, by the last host learnt.
_UNKNOWN = {"": "the Xet hosts are not known", "token": "the CAS is not known",
            "cas": "the xorb hosts are not known", "xorb": ""}
# The request each host is asked, once it is known.
_ASKED = {"token": "the token request", "cas": "the reconstruction request"}


@dataclass(frozen=True)
class XetHost:
    """One Xet host and its verdict. ``url`` is its origin only (a signed URL's query is a secret)."""

    role: str
    url: str
    ok: bool
    code: str  # "ok" or a stable error code
    stage: str = "done"  # the probe's last step: dns, proxy, tcp, tls, http, done, request
    message: str = ""
    latency_ms: float | None = None
    summary: str = ""
    fix: str = ""

    @property
    def host(self) -> str:
        return (urlsplit(self.url).hostname or "").lower()

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "url": self.url, "host": self.host, "ok": self.ok, "code": self.code,
                "stage": self.stage, "message": self.message,
                "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
                "summary": self.summary, "fix": self.fix}


@dataclass(frozen=True)
class XetRoute:
    """What a source's Xet side looks like from here. ``state``: ``xet`` (the
    file would come through Xet, ``hosts`` say whether it can), ``plain`` (the
    source serves it over plain HTTP only), ``off`` (Xet turned off here),
    ``unknown`` (the questions did not get far enough; ``note`` says why)."""

    source: Source
    repo: str
    state: str
    file: str = ""
    note: str = ""
    hosts: tuple[XetHost, ...] = ()

    @property
    def ok(self) -> bool | None:
        """Whether every Xet host answered; None when the file does not come through Xet or it is not known."""
        return all(h.ok for h in self.hosts) if self.state == "xet" else None

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "repo": self.repo, "file": self.file, "note": self.note, "ok": self.ok,
                "hosts": [h.to_dict() for h in self.hosts]}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


@dataclass
class _Found:
    """What the questions learnt so far, written by the asking thread and read at the deadline."""

    start_probe: Callable[[str, str], None]
    origins: dict[str, list[str]] = field(default_factory=dict)  # role -> origins, in order
    errors: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # role -> its request's code, message, hint
    state: str = ""
    file: str = ""
    note: str = ""
    last: str = ""  # the last role learnt
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, role: str, url: str) -> None:
        origin = _origin(url)
        with self.lock:
            self.last = role
            known = self.origins.setdefault(role, [])
            if origin in known:
                return
            known.append(origin)
        self.start_probe(role, origin)

    def end(self, state: str, note: str = "") -> None:
        with self.lock:
            self.state, self.note = state, note


def _ask(source: Source, ref: RepoRef, http: HttpClient, found: _Found) -> None:
    """The client's questions, in its order; each answer recorded as it comes."""
    role = "token"
    try:
        manifest = HubClient(source, http).manifest(ref)
        lfs = [f for f in manifest.files if f.sha256 and f.size > 0]
        if not lfs:
            return found.end("plain", f"{ref.repo_id} has no LFS file: nothing of it comes through Xet")
        file = min(lfs, key=lambda f: (f.size, f.path))
        found.file = file.path
        session = XetSession(source, http)
        info = session.head(ref, manifest.commit, file.path)
        if info is None:
            return found.end("plain", f"the resolve answer of {file.path} names no Xet file: "
                                      "this source serves it over plain HTTP")
        found.add("token", info.token_url)
        token = session.token(info.token_url)
        role = "cas"
        found.add("cas", token.cas_url)
        answer = session.reconstruction(info, (0, 1))
        for fetches in answer.xorbs.values():
            for fetch in fetches:
                found.add("xorb", fetch.url)
        found.end("xet")
    except QwenhomeError as exc:
        if found.last:  # a Xet host's answer: that host's verdict
            with found.lock:
                found.errors[role] = (exc.code, exc.message, exc.hint or "")
            found.end("xet", f"{_UNKNOWN[found.last]}: {exc.message}")
        else:
            other = " (`--repo` names one this source has)" if exc.code == "repo-not-found" else ""
            found.end("unknown", f"{_UNKNOWN['']}: {exc.message}{other}")
    except Exception as exc:  # a check must never break the command
        log.debug("Xet check of %s failed", source.label, exc_info=True)
        found.end("unknown", f"the check itself failed: {exc!r}")


def _host(role: str, origin: str, probe: ProbeResult | None, request: tuple[str, str, str] | None,
          budget: float) -> XetHost:
    parts = urlsplit(origin)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    hint = ""
    if probe is None:
        code, stage, message = "probe-timeout", "dns", f"no answer from {host} within {budget:.1f}s"
    elif not probe.ok:
        code, stage, message = probe.code, probe.stage, probe.message
    elif request is not None:
        (code, message, hint), stage = request, "request"
    else:
        return XetHost(role, origin, True, "ok", "done", probe.message, probe.latency_ms)
    summary, fix = advice(role, host, port, code, message, hint)
    return XetHost(role, origin, False, code, stage, message, None, summary, fix)


def _route(settings: Settings, source: Source, ref: RepoRef, deadline: float,
           clock: Callable[[], float]) -> XetRoute:
    budget = max(0.05, deadline - clock())
    probes: dict[tuple[str, str], list[ProbeResult]] = {}
    threads: list[threading.Thread] = []

    def start_probe(role: str, origin: str) -> None:
        def run() -> None:
            left = max(0.05, min(settings.timeouts.probe, deadline - clock()))
            probes[(role, origin)] = probe_sources(settings, [Source(f"xet-{role}", "hf", origin)], timeout=left,
                                                   clock=clock, remember=False)

        t = threading.Thread(target=run, daemon=True, name=f"qh-xet-probe-{role}")
        threads.append(t)
        t.start()

    found = _Found(start_probe)
    step = max(0.05, budget)
    http = HttpClient(replace(settings.timeouts, connect=step, read=step), settings.env)
    asking = threading.Thread(target=_ask, args=(source, ref, http, found), daemon=True, name="qh-xet-ask")
    asking.start()
    asking.join(max(0.0, deadline - clock()))
    with found.lock:
        started = list(threads)
    for t in started:
        t.join(max(0.0, deadline - clock()))
    with found.lock:
        state, note, file = found.state, found.note, found.file
        origins = {r: list(o) for r, o in found.origins.items()}
        errors = dict(found.errors)
    if not state:  # still asking at the deadline
        state = "xet" if origins else "unknown"
        note = f"{_UNKNOWN[found.last] or 'not all xorb hosts are known'}: no answer within {budget:.1f}s"
        if found.last in _ASKED:  # that host took the request and never answered it
            errors.setdefault(found.last, ("response-timeout", f"no answer to {_ASKED[found.last]} within "
                                                               f"{budget:.1f}s", ""))
    hosts = []
    for role in ROLES:
        for origin in origins.get(role, []):
            done = probes.get((role, origin))
            hosts.append(_host(role, origin, done[0] if done else None, errors.get(role), budget))
    http.close()
    return XetRoute(source, ref.repo_id, state, file, note, tuple(hosts))


def probe_xet(settings: Settings, sources: Sequence[Source], repo: str, *, timeout: float | None = None,
              clock: Callable[[], float] = time.monotonic) -> list[XetRoute]:
    """The Xet route of each Hub-protocol source in ``sources`` for ``repo``, in
    parallel, within ``timeout`` seconds (default ``XET_FACTOR`` probe
    time-outs). Nothing is sent when the settings say offline."""
    hub = [s for s in sources if s.kind == "hf"]
    if settings.offline_forced or not hub:
        return []
    ref = RepoRef.parse(repo)
    if not settings.xet:
        return [XetRoute(s, ref.repo_id, "off", note="Xet is turned off (HF_HUB_DISABLE_XET, or xet = false "
                                                   "under [pull])") for s in hub]
    deadline = clock() + (settings.timeouts.probe * XET_FACTOR if timeout is None else timeout)
    routes: dict[str, XetRoute] = {}

    def run(s: Source) -> None:
        routes[s.url] = _route(settings, s, ref, deadline, clock)

    threads = [threading.Thread(target=run, args=(s,), daemon=True, name=f"qh-xet-{s.name}") for s in hub]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - clock()) + 0.5)  # (each route ends by the deadline itself)
    return [routes.get(s.url) or XetRoute(s, ref.repo_id, "unknown", note="the check did not finish")
            for s in hub]
