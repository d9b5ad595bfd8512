"""Which sources are reachable now, how healthy they are, and in which order to use them.

The offline decision is a short probe of every source in parallel: DNS, a TCP
connect, for https a TLS handshake, and ``OPTIONS *`` (HTTP's own no-op; any
status line proves a live HTTP server without asking for a resource). The
whole probe is bounded by ``settings.timeouts.probe`` (0.8 s by default): a
source whose resolver hangs, whose address black-holes SYNs, or which accepts
and never answers simply counts as unreachable when the time is up. When the
cache cannot answer anyway (``patient``), a slow network deserves more time:
the bound is ``PATIENT_FACTOR`` times longer and remembered time-outs are
probed again, so a slow link is not mistaken for no link.

Results are remembered in ``state_dir/netstate.json`` for a short while
(unreachable 60 s, reachable 15 s), with each source's health: consecutive
failures seen by real transfers and the last latency. A request that
succeeds clears an unreachable verdict at once, and a source remembered as
down is probed again (a time-out quickly) before a command answers offline
(see :func:`decide`). :func:`rank` orders sources by that health; the configured
order breaks ties.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .config import Settings, Source, ca_bundle
from .errors import QwenhomeError
from .net import tls
from .net.head import USER_AGENT, request_head
from .net.proxy import proxy_origin
from .net.steps import Resolver, connect_first, read_head_bytes, resolve, tunnel, wrap_tls
from .net.url import Origin
from .store.cache import atomic_write

NETSTATE_FILE = "netstate.json"
OFFLINE_TTL = 60.0  # seconds an unreachable verdict is trusted
ONLINE_TTL = 15.0  # seconds a reachable verdict is trusted
PATIENT_FACTOR = 5.0
# A source remembered as timing out gets a second probe this share of the
# budget long before a command answers offline: a mirror that came back (on
# the LAN: milliseconds) is found, a slow link costs a fraction of a probe.
QUICK_FACTOR = 0.25
HEALTH_TTL = 600.0  # failures older than this no longer push a source back
# A reachable source this much slower than the best one goes after the quick ones.
SLOW_FACTOR = 3.0
SLOW_MARGIN_MS = 50.0

_STAGE_TIMEOUT_CODE = {
    "dns": "dns-timeout",
    "proxy": "proxy-timeout",
    "tcp": "connection-timeout",
    "tls": "tls-timeout",
    "http": "response-timeout",
}


@dataclass(frozen=True)
class ProbeResult:
    """One source's reachability. ``code`` is ``ok`` or a stable error code."""

    source: Source
    ok: bool
    code: str
    latency_ms: float | None = None  # DNS through the HTTP status line
    stage: str = "done"  # the stage reached: dns, proxy, tcp, tls, http, done
    message: str = ""
    checked_at: float = 0.0  # wall clock
    remembered: bool = False  # taken from netstate.json, not probed now
    failures: int = 0  # consecutive failures seen by real requests

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "code": self.code,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
            "stage": self.stage,
            "message": self.message,
            "remembered": self.remembered,
            "failures": self.failures,
        }


@dataclass
class _Progress:
    stage: str = "dns"
    result: ProbeResult | None = None


# -- one probe -----------------------------------------------------------------------
class _Probe:
    """One source's probe, step by step; ``progress.stage`` names the step
    under way (read by :func:`probe_sources` when the budget runs out)."""

    def __init__(self, source: Source, deadline: float, progress: _Progress, env: Mapping[str, str],
                 ssl_context: ssl.SSLContext | None, clock: Callable[[], float]) -> None:
        self.source = source
        self.origin = Origin.of(source.url)
        self.proxy = proxy_origin(env, self.origin)
        self.hop = self.proxy or self.origin  # what is dialled
        self.deadline = deadline
        self.progress = progress
        self.env = env
        self.ssl_context = ssl_context
        self.clock = clock
        self.sock: socket.socket | None = None  # the connection, once made (closed by the caller)

    def left(self) -> float:
        return max(0.01, self.deadline - self.clock())

    def fail(self, code: str, message: str) -> ProbeResult:
        return ProbeResult(self.source, False, code, None, self.progress.stage, message)

    def dial(self, resolver: Resolver) -> ProbeResult | None:
        """Connect to the origin or its proxy (``self.sock``); the failure, if any."""
        hop = self.hop
        self.progress.stage = "dns"
        try:
            addresses = resolve(hop.host, hop.port, resolver=resolver)
        except socket.gaierror as exc:
            return self.fail("dns-resolution-failed", f"cannot resolve {hop.host}: {exc.strerror}")
        except OSError as exc:
            return self.fail("dns-resolution-failed", f"cannot resolve {hop.host}: {exc}")
        self.progress.stage = "tcp"
        try:
            self.sock = connect_first(addresses, self.left)
        except ConnectionRefusedError:
            return self.fail("connection-refused", f"connection to {hop.host}:{hop.port} refused")
        except TimeoutError:
            return self.fail("connection-timeout", f"connecting to {hop.host}:{hop.port} timed out")
        except OSError as exc:
            return self.fail("connection-failed", f"cannot connect to {hop.host}:{hop.port}: {exc}")
        return None

    def talk(self) -> ProbeResult | bytes:
        """Through the proxy's tunnel and TLS when needed, then one request
        that only a live HTTP server answers: its status line, or the failure."""
        origin, proxy, sock = self.origin, self.proxy, self.sock
        assert sock is not None
        sock.settimeout(self.left())
        if proxy and origin.scheme == "https":
            self.progress.stage = "proxy"
            status, said = tunnel(sock, origin.host, origin.port)
            if status != 200:
                return self.fail("proxy-refused", f"proxy {proxy.host} answered {said!r} to CONNECT")
        if origin.scheme == "https":
            self.progress.stage = "tls"
            context = self.ssl_context or tls.ssl_context(ca_bundle(self.env))
            sock.settimeout(self.left())
            sock = self.sock = wrap_tls(sock, context, origin.host)
        self.progress.stage = "http"
        sock.settimeout(self.left())
        # OPTIONS * is HTTP's own no-op; through an HTTP proxy (no tunnel) the
        # origin's root, so that the proxy has to reach it.
        forwarded = proxy is not None and origin.scheme == "http"
        target = f"http://{origin.authority}/" if forwarded else "*"
        sock.sendall(request_head("HEAD" if forwarded else "OPTIONS", target, origin.authority,
                                  {"User-Agent": USER_AGENT, "Connection": "close"}))
        line = read_head_bytes(sock, first_line_only=True).split(b"\r\n", 1)[0]
        if forwarded and (not line.startswith(b"HTTP/") or line.split(b" ")[1:2] in ([b"502"], [b"504"])):
            # Through a proxy only a real answer from the origin counts.
            said = line.decode(errors="replace")
            return self.fail("proxy-refused", f"proxy {self.hop.host} could not reach {origin.host}: {said!r}")
        if not line.startswith(b"HTTP/"):
            # It reacted (closed, or sent something odd): a live host, not a
            # black hole; the real request will tell the rest.
            line = b"answered without an HTTP status line"
        return line


def _probe_one(
    source: Source,
    deadline: float,
    progress: _Progress,
    *,
    env: Mapping[str, str],
    resolver: Resolver,
    ssl_context: ssl.SSLContext | None,
    clock: Callable[[], float],
) -> ProbeResult:
    t0 = clock()
    probe = _Probe(source, deadline, progress, env, ssl_context, clock)
    failed = probe.dial(resolver)
    if failed is not None:
        return failed
    host = probe.origin.host
    try:
        answer = probe.talk()
    except ssl.SSLCertVerificationError as exc:
        return probe.fail("tls-verification-failed", f"TLS certificate of {host} not trusted: {exc.verify_message}")
    except TimeoutError:
        return probe.fail(_STAGE_TIMEOUT_CODE.get(progress.stage, "probe-timeout"), f"{host} did not answer in time")
    except ssl.SSLError as exc:
        return probe.fail("tls-error", f"TLS error with {host}: {exc}")
    except OSError as exc:
        if progress.stage != "http" or probe.proxy:
            return probe.fail("connection-dropped", f"connection to {host} failed: {exc}")
        answer = f"reset the connection ({exc.__class__.__name__})".encode()  # reacted: alive
    finally:
        if probe.sock is not None:
            probe.sock.close()
    if isinstance(answer, ProbeResult):
        return answer
    progress.stage = "done"
    return ProbeResult(source, True, "ok", (clock() - t0) * 1000.0, "done", answer.decode(errors="replace"))


def probe_sources(
    settings: Settings,
    sources: Sequence[Source] | None = None,
    *,
    timeout: float | None = None,
    resolver: Resolver = socket.getaddrinfo,
    ssl_context: ssl.SSLContext | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    remember: bool = True,
) -> list[ProbeResult]:
    """Probe ``sources`` (default: the configured ones) in parallel, within
    ``timeout`` seconds in all (default ``settings.timeouts.probe``); results in
    the given order. Threads still stuck (a hanging resolver) are abandoned."""
    srcs = list(settings.sources if sources is None else sources)
    budget = settings.timeouts.probe if timeout is None else timeout
    deadline = clock() + budget
    env = dict(settings.env)
    progress = [_Progress() for _ in srcs]
    threads = []
    for src, prog in zip(srcs, progress, strict=True):
        def run(s: Source = src, p: _Progress = prog) -> None:
            try:
                p.result = _probe_one(s, deadline, p, env=env, resolver=resolver, ssl_context=ssl_context, clock=clock)
            except QwenhomeError as exc:  # e.g. a CA bundle that cannot be loaded
                p.result = ProbeResult(s, False, exc.code, None, p.stage, exc.message)
            except Exception as exc:  # a probe must never break the command
                p.result = ProbeResult(s, False, "probe-error", None, p.stage, repr(exc))

        t = threading.Thread(target=run, daemon=True, name=f"qh-probe-{src.name}")
        t.start()
        threads.append(t)
    for t in threads:
        t.join(max(0.0, deadline - clock()))
    now = wall()
    out = []
    for src, prog in zip(srcs, progress, strict=True):
        res = prog.result
        if res is None:
            res = ProbeResult(src, False, _STAGE_TIMEOUT_CODE.get(prog.stage, "probe-timeout"), None, prog.stage,
                              f"no answer from {src.host} within {budget:.1f}s ({prog.stage})")
        out.append(replace(res, checked_at=now))
    if remember:
        state = NetState.load(settings)
        for r in out:
            state.put_probe(r)
        out = [replace(r, failures=state.failures(r.source)) for r in out]
        state.save()
    return out


# -- remembered state ----------------------------------------------------------------
@dataclass
class NetState:
    """``netstate.json``: probe verdicts and health per source URL."""

    settings: Settings
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    health: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: Settings) -> NetState:
        try:
            data = json.loads((settings.state_dir / NETSTATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        probes = data.get("probes") if isinstance(data, dict) else None
        health = data.get("health") if isinstance(data, dict) else None
        return cls(settings, probes if isinstance(probes, dict) else {}, health if isinstance(health, dict) else {})

    def save(self) -> None:
        try:
            atomic_write(self.settings.state_dir / NETSTATE_FILE,
                         json.dumps({"version": 1, "probes": self.probes, "health": self.health}, indent=1))
        except Exception:
            pass  # remembering is an optimisation; a read-only home still works

    def put_probe(self, r: ProbeResult) -> None:
        self.probes[r.source.url] = {"ok": r.ok, "code": r.code, "latency_ms": r.latency_ms, "stage": r.stage,
                                     "message": r.message, "at": r.checked_at}
        h = self.health.setdefault(r.source.url, {"failures": 0})
        if r.ok:
            h["latency_ms"] = r.latency_ms

    def remembered(self, source: Source, now: float) -> ProbeResult | None:
        """The last verdict for ``source`` if it is still fresh."""
        p = self.probes.get(source.url)
        if not isinstance(p, dict):
            return None
        try:
            at = float(p.get("at", 0.0))
            ok = bool(p.get("ok"))
        except (TypeError, ValueError):
            return None
        ttl = ONLINE_TTL if ok else OFFLINE_TTL
        if not 0 <= now - at <= ttl:
            return None
        lat = p.get("latency_ms")
        return ProbeResult(source, ok, str(p.get("code", "")), float(lat) if isinstance(lat, int | float) else None,
                           str(p.get("stage", "")), str(p.get("message", "")), at, True, self.failures(source))

    def failures(self, source: Source, now: float | None = None) -> int:
        """Consecutive failures, forgotten after ``HEALTH_TTL`` so a source
        ranked last for a past failure gets its chance again."""
        h = self.health.get(source.url)
        try:
            if not isinstance(h, dict):
                return 0
            age = (time.time() if now is None else now) - float(h.get("at", 0.0))
            return int(h.get("failures", 0)) if age <= HEALTH_TTL else 0
        except (TypeError, ValueError):
            return 0

    def latency(self, source: Source) -> float | None:
        h = self.health.get(source.url)
        lat = h.get("latency_ms") if isinstance(h, dict) else None
        return float(lat) if isinstance(lat, int | float) else None

    def record(self, source: Source, ok: bool, *, unreachable: bool = False, code: str = "",
               now: float | None = None) -> None:
        """What a real request learned: success resets the failure count and
        clears a remembered unreachable verdict at once; a transport failure
        (``unreachable``) marks the source unreachable, so the next command
        does not wait for it."""
        h = self.health.setdefault(source.url, {"failures": 0})
        h["failures"] = 0 if ok else self.failures(source, now) + 1
        h["at"] = time.time() if now is None else now
        seen = self.probes.get(source.url)
        if ok and not (isinstance(seen, dict) and seen.get("ok")):
            self.probes[source.url] = {"ok": True, "code": "ok", "latency_ms": None, "stage": "request",
                                       "message": "a request succeeded", "at": h["at"]}
        if not ok and unreachable:
            self.probes[source.url] = {"ok": False, "code": code or "unreachable", "latency_ms": None,
                                       "stage": "request", "message": "a request failed",
                                       "at": time.time() if now is None else now}


def record_outcomes(settings: Settings, outcomes: dict[Source, tuple[bool, bool, str]]) -> None:
    """Merge ``{source: (ok, unreachable, code)}`` from a pull into netstate.json."""
    if not outcomes:
        return
    state = NetState.load(settings)
    for src, (ok, unreachable, code) in outcomes.items():
        state.record(src, ok, unreachable=unreachable, code=code)
    state.save()


# -- the decision ----------------------------------------------------------------------
@dataclass(frozen=True)
class NetworkDecision:
    online: bool
    results: tuple[ProbeResult, ...]

    @property
    def reason(self) -> str:
        return "; ".join(f"{r.source.label}: {r.code}" for r in self.results) or "no source configured"

    @property
    def remembered(self) -> bool:
        return bool(self.results) and all(r.remembered for r in self.results)


def decide(
    settings: Settings,
    *,
    patient: bool = False,
    probe: Callable[[Settings, list[Source]], list[ProbeResult]] | None = None,
    wall: Callable[[], float] = time.time,
) -> NetworkDecision:
    """Online if any source is reachable. Fresh remembered verdicts are used
    as they are; only stale sources are probed (in parallel, bounded).
    ``patient``: nothing cached can answer instead, so time-outs are not
    trusted from memory and the probe may take ``PATIENT_FACTOR`` times longer.

    A remembered failure is not the last word: before the answer is offline,
    sources remembered as failing fast (refused, unresolvable, a TLS error)
    are probed once more, so a mirror that came back is used at once, and
    one still down costs a refused connection. A remembered time-out is
    asked again too, with a quick probe (``QUICK_FACTOR`` of the budget;
    ``patient``: the whole probe, as it is not trusted from memory then)."""
    if settings.offline_forced or not settings.sources:
        return NetworkDecision(False, ())
    state = NetState.load(settings)
    now = wall()
    known: dict[str, ProbeResult] = {}
    for s in settings.sources:
        r = state.remembered(s, now)
        if r is not None and not (patient and _timed_out(r)):
            known[s.url] = r
    budget = settings.timeouts.probe * (PATIENT_FACTOR if patient else 1.0)

    def run(srcs: list[Source], seconds: float) -> None:
        for r in probe(settings, srcs) if probe else probe_sources(settings, srcs, timeout=seconds):
            known[r.source.url] = r

    stale = [s for s in settings.sources if s.url not in known]
    if stale:
        run(stale, budget)
    for quick in (False, True):  # (the refusals first: they answer at once)
        again = [s for s in settings.sources if s.url in known and known[s.url].remembered
                 and not known[s.url].ok and _timed_out(known[s.url]) == quick]
        if again and not any(r.ok for r in known.values()):
            run(again, budget * QUICK_FACTOR if quick else budget)
    results = tuple(known[s.url] for s in settings.sources if s.url in known)
    return NetworkDecision(any(r.ok for r in results), results)


def _timed_out(r: ProbeResult) -> bool:
    return r.code.endswith("-timeout")


class EarlyDecision:
    """Start the (short) decision now, in the background, and hand it to a
    pull later: a command overlaps the probe with its own start-up. Called as
    ``decide_network(settings, patient)``; a patient caller whose early verdict
    is offline only by time-outs gets a patient decision of its own."""

    def __init__(self, settings: Settings) -> None:
        self._result: NetworkDecision | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(settings,), daemon=True, name="qh-decide")
        self._thread.start()

    def _run(self, settings: Settings) -> None:
        try:
            self._result = decide(settings)
        except BaseException as exc:  # re-raised in the caller's thread
            self._error = exc

    def __call__(self, settings: Settings, patient: bool) -> NetworkDecision:
        self._thread.join()
        if self._error is not None:
            raise self._error
        early = self._result
        assert early is not None
        if patient and not early.online and any(r.code.endswith("-timeout") for r in early.results):
            return decide(settings, patient=True)
        return early


def rank(sources: Sequence[Source], results: Sequence[ProbeResult] = (), state: NetState | None = None) -> list[Source]:
    """Order sources for use: reachable before unreachable, fewer consecutive
    failures first, a much slower source after the quick ones; otherwise the
    configured order."""
    by_url = {r.source.url: r for r in results}

    def latency(s: Source) -> float | None:
        r = by_url.get(s.url)
        if r is not None and r.latency_ms is not None:
            return r.latency_ms
        return state.latency(s) if state is not None else None

    lats = [x for x in (latency(s) for s in sources) if x is not None]
    best = min(lats) if lats else None
    index = {s: i for i, s in enumerate(sources)}

    def key(s: Source) -> tuple[int, int, int, int]:
        r = by_url.get(s.url)
        down = 1 if r is not None and not r.ok else 0
        fails = state.failures(s) if state is not None else (r.failures if r else 0)
        lat = latency(s)
        slow = 1 if best is not None and lat is not None and lat > best * SLOW_FACTOR + SLOW_MARGIN_MS else 0
        return down, min(fails, 3), slow, index[s]

    return sorted(sources, key=key)
