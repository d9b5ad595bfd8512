"""Fault injection and a request log for the mirror, through its hooks.

Every fault is count-based and so deterministic: ``faults.fail(503, times=2)``
answers the first two matching requests with 503 and then serves normally.
A rule matches a request when its ``path`` is None, equals the repository file
path (``model.safetensors``) or equals the request path (``/api/models/...``),
and its ``method`` (if given) is the request's method.

    faults = Faults()
    server = MirrorServer(FolderBackend(root), hooks=faults).start()
    faults.drop_after(1_000_000, path="model.safetensors")
    ...
    assert faults.bytes_sent("model.safetensors") == expected

Xet routes have no file path: match them with a predicate on the route kind,
``faults.fail(503, predicate=kind("reconstruction"))``, and count them with
:meth:`Faults.of_kind`.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qwenhome.mirror import (
    BodyInterrupted,
    BodySlice,
    BodyWriter,
    CannedResponse,
    Hooks,
    RequestInfo,
)

Predicate = Callable[[RequestInfo], bool]


def kind(*kinds: str) -> Predicate:
    """A predicate matching requests of these route kinds (``reconstruction``, ``xorb``, ...)."""
    return lambda info: info.route_kind in kinds
_CHUNK = 64 * 1024


@dataclass
class RequestRecord:
    """What one request asked for and what the server actually sent."""

    method: str
    path: str
    target: str
    file_path: str
    range: str | None
    status: int
    bytes_sent: int  # body bytes that reached the socket
    connection_id: int
    request_no: int  # 1 for the first request on a connection
    has_auth_header: bool
    error: str | None
    started: float
    ended: float
    route_kind: str = ""  # resolve, tree, reconstruction, xorb, xet-read-token, ...
    server_port: int = 0  # which of the mirror's ports took it


@dataclass
class _Rule:
    kind: str
    path: str | None
    method: str | None
    remaining: int | None  # None: unlimited
    params: dict[str, Any] = field(default_factory=dict)
    predicate: Predicate | None = None
    hits: int = 0

    def matches(self, info: RequestInfo) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method is not None and info.method != self.method:
            return False
        if self.predicate is not None and not self.predicate(info):
            return False
        return self.path is None or self.path in (info.file_path, info.path)

    def consume(self) -> None:
        self.hits += 1
        if self.remaining is not None:
            self.remaining -= 1


class TokenBucket:
    """Token bucket pacing one TCP connection at ``rate`` bytes/s."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(16 * 1024.0, rate / 20)
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self, n: int, wait: Callable[[float], bool]) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= n:
                self.tokens -= n
                return
            if wait((n - self.tokens) / self.rate):
                return  # released: stop pacing


class Faults(Hooks):
    """Configurable faults plus a log of every request; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._rules: list[_Rule] = []
        self._rates: list[tuple[Predicate | None, float]] = []  # (the requests paced, None: all; rate)
        self._buckets: dict[int, TokenBucket] = {}
        self._released = threading.Event()
        self.log: list[RequestRecord] = []
        self._started: dict[tuple[int, int], float] = {}
        self._streamed: dict[str, int] = {}  # body bytes sent so far through a writer, by route kind

    # -- configuration -------------------------------------------------------------
    def _add(self, kind: str, path: str | None, method: str | None, times: int | None,
             predicate: Predicate | None = None, **params: Any) -> Faults:
        with self._lock:
            self._rules.append(_Rule(kind, path, method, times, params, predicate))
        return self

    def fail(self, status: int, times: int | None = 1, *, path: str | None = None,
             method: str | None = None, retry_after: float | None = None,
             predicate: Predicate | None = None) -> Faults:
        """Answer ``status`` (e.g. 500, 503, 429) with an error body, optionally ``Retry-After``."""
        return self._add("fail", path, method, times, predicate, status=status, retry_after=retry_after)

    def respond(self, status: int, body: bytes | str = b"", *, path: str | None = None,
                method: str | None = None, times: int | None = None,
                headers: dict[str, str] | None = None, content_type: str = "application/json",
                truncate_to: int | None = None, predicate: Predicate | None = None) -> Faults:
        """Send this exact response instead of the real one (the "lying server")."""
        data = body.encode() if isinstance(body, str) else body
        return self._add("respond", path, method, times, predicate, response=CannedResponse(
            status, data, dict(headers or {}), content_type, truncate_to=truncate_to))

    def respond_json(self, obj: Any, *, path: str, status: int = 200, times: int | None = None,
                     headers: dict[str, str] | None = None, method: str | None = None) -> Faults:
        """Serve ``obj`` as the JSON body for ``path`` (e.g. a forged revision listing)."""
        return self.respond(status, json.dumps(obj), path=path, times=times, headers=headers,
                            method=method)

    def forge_repo(self, repo_id: str, files: list[dict[str, Any]], *, commit: str = "f" * 40,
                   repo_type: str = "model", revision: str = "main",
                   bodies: dict[str, bytes] | None = None) -> Faults:
        """Make the mirror lie about a whole repository (security tests).

        ``files`` are listed verbatim, e.g. ``{"path": "../evil", "size": 5}`` with
        optional ``oid`` (git blob id) and ``sha256`` (makes it an LFS file); sizes,
        hashes and names need not be true or safe. ``commit`` is sent as ``sha``
        (it may be unsafe too). ``bodies`` maps a path to the bytes its ``resolve``
        URL returns (with the listed etag), whatever the listing says.
        """
        api = f"/api/{repo_type}s/{repo_id}"
        siblings, tree = [], []
        for f in files:
            oid = f.get("oid", "0" * 40)
            sib: dict[str, Any] = {"rfilename": f["path"], "size": f.get("size", 0), "blobId": oid}
            entry: dict[str, Any] = {"type": "file", "path": f["path"], "size": f.get("size", 0), "oid": oid}
            if f.get("sha256"):
                sib["lfs"] = {"sha256": f["sha256"], "size": f.get("size", 0), "pointerSize": 134}
                entry["lfs"] = {"oid": f["sha256"], "size": f.get("size", 0), "pointerSize": 134}
            siblings.append(sib)
            tree.append(entry)
        info = {"id": repo_id, "sha": commit, "siblings": siblings, "private": False}
        for path in (api, f"{api}/revision/{revision}", f"{api}/revision/{commit}"):
            self.respond_json(info, path=path)
        for rev in {revision, commit}:
            self.respond_json(tree, path=f"{api}/tree/{rev}", headers={"X-Repo-Commit": commit})
        prefix = "" if repo_type == "model" else f"/{repo_type}s"
        listed = {f["path"]: f for f in files}
        for path, body in (bodies or {}).items():
            f = listed.get(path, {})
            etag = f.get("sha256") or f.get("oid", "0" * 40)
            headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
            if f.get("sha256"):
                headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(f.get("size", len(body)))})
            for rev in {revision, commit}:
                self.respond(200, body, path=f"{prefix}/{repo_id}/resolve/{rev}/{path}", headers=headers,
                             content_type="application/octet-stream")
        return self

    def latency(self, seconds: float, times: int | None = None, *, path: str | None = None,
                method: str | None = None, predicate: Predicate | None = None) -> Faults:
        """Wait ``seconds`` before answering (time to first byte)."""
        return self._add("latency", path, method, times, predicate, seconds=seconds)

    def drop_after(self, nbytes: int, times: int | None = 1, *, path: str | None = None,
                   reset: bool = False, predicate: Predicate | None = None) -> Faults:
        """Close the connection after ``nbytes`` of a file body (with ``reset``, abortively:
        the client sees a connection reset instead of an early end of the body)."""
        return self._add("drop", path, "GET", times, predicate, nbytes=nbytes, reset=reset)

    def stall(self, after_bytes: int, seconds: float, times: int | None = 1, *,
              path: str | None = None, predicate: Predicate | None = None) -> Faults:
        """Send nothing for ``seconds`` once ``after_bytes`` of a body are out."""
        return self._add("stall", path, "GET", times, predicate, after=after_bytes, seconds=seconds)

    def trickle(self, after_bytes: int, step: int, every: float, times: int | None = 1, *,
                path: str | None = None, predicate: Predicate | None = None) -> Faults:
        """Once ``after_bytes`` of a body are out, send ``step`` bytes every
        ``every`` seconds: never silent for long, never done."""
        return self._add("trickle", path, "GET", times, predicate, after=after_bytes, step=step, every=every)

    def corrupt(self, offset: int, times: int | None = 1, *, path: str | None = None,
                predicate: Predicate | None = None) -> Faults:
        """Flip the byte at file ``offset`` in bodies whose range covers it (for a xorb
        answer, ``offset`` counts in the body as sent, multipart framing included)."""
        return self._add("corrupt", path, "GET", times, predicate, offset=offset)

    def bandwidth(self, bytes_per_second: float | None, predicate: Predicate | None = None) -> Faults:
        """Limit every TCP connection to this rate (None removes every limit);
        with ``predicate``, only the bodies of the requests it matches
        (``kind("xorb")``: a xorb host capped per connection), beside the
        limits set so far for others (the first that matches applies)."""
        with self._lock:
            if bytes_per_second is None or predicate is None:
                self._rates = []
            if bytes_per_second is not None:
                self._rates.append((predicate, bytes_per_second))
            self._buckets.clear()
        return self

    def clear(self) -> None:
        """Remove all faults (the log is kept) and release stalled bodies."""
        with self._lock:
            self._rules.clear()
            self._rates = []
            self._buckets.clear()
        self._released.set()
        self._released = threading.Event()

    def release(self) -> None:
        """End every stall and pacing wait now (used when stopping the server)."""
        self._released.set()

    # -- log queries ---------------------------------------------------------------
    def records(self, path: str | None = None, method: str | None = None,
                settle: float = 2.0) -> list[RequestRecord]:
        """Logged requests in the order they arrived.

        A client sees a response before the server logs it, so this first waits
        (up to ``settle`` seconds) until no request is in flight.
        """
        with self._idle:
            self._idle.wait_for(lambda: not self._started, timeout=settle)
            log = sorted(self.log, key=lambda r: r.started)
        return [
            r for r in log
            if (path is None or path in (r.file_path, r.path)) and (method is None or r.method == method)
        ]

    def bytes_sent(self, path: str | None = None) -> int:
        return sum(r.bytes_sent for r in self.records(path, "GET"))

    def of_kind(self, kind: str) -> list[RequestRecord]:
        """Logged requests of one route kind (``reconstruction``, ``xorb``, ``resolve``, ...)."""
        return [r for r in self.records() if r.route_kind == kind]

    def streamed(self, *kinds: str) -> int:
        """Body bytes of these route kinds sent so far, counted as they go
        (the log counts a body once it ends); only bodies paced or faulted
        (sent through this wrapper's writer) count."""
        with self._lock:
            return sum(self._streamed.get(k, 0) for k in kinds)

    def _stream(self, route_kind: str, n: int) -> None:
        with self._lock:
            self._streamed[route_kind] = self._streamed.get(route_kind, 0) + n

    def hits(self, kind: str) -> int:
        with self._lock:
            return sum(r.hits for r in self._rules if r.kind == kind)

    # -- hooks -----------------------------------------------------------------------
    def _take(self, info: RequestInfo, kinds: tuple[str, ...],
              applies: Callable[[_Rule], bool] | None = None) -> list[_Rule]:
        """Matching rules of these kinds, consuming one use of each."""
        taken = []
        with self._lock:
            for rule in self._rules:
                if rule.kind in kinds and rule.matches(info) and (applies is None or applies(rule)):
                    rule.consume()
                    taken.append(rule)
        return taken

    def on_request(self, info: RequestInfo) -> CannedResponse | None:
        with self._lock:
            self._started[(info.connection_id, info.request_no)] = time.monotonic()
        for rule in self._take(info, ("latency",)):
            self._released.wait(rule.params["seconds"])
        for rule in self._take(info, ("respond", "fail")):
            if rule.kind == "respond":
                canned: CannedResponse = rule.params["response"]
                return canned
            status = rule.params["status"]
            headers = {}
            if rule.params["retry_after"] is not None:
                headers["Retry-After"] = str(rule.params["retry_after"])
            body = json.dumps({"error": f"injected fault {status}"}).encode()
            return CannedResponse(status, body, headers)
        return None

    def body_writer(self, info: RequestInfo, body: BodySlice) -> BodyWriter | None:
        def applies(rule: _Rule) -> bool:
            # Only bodies the fault can act on use it up: those that carry the
            # corrupted byte, or are longer than the drop or stall point.
            if rule.kind == "corrupt":
                return bool(body.offset <= rule.params["offset"] < body.offset + body.length)
            if rule.kind == "drop":
                return body.length > rule.params["nbytes"]
            return body.length > rule.params["after"]

        rules = self._take(info, ("drop", "stall", "trickle", "corrupt"), applies)
        with self._lock:
            rate = next((r for on, r in self._rates if on is None or on(info)), None)
            bucket = None
            if rate is not None:
                bucket = self._buckets.setdefault(info.connection_id, TokenBucket(rate))
        if not rules and bucket is None:
            return None
        return _FaultyWriter(rules, bucket, self._released, lambda n: self._stream(info.route_kind, n))

    def on_response(self, info: RequestInfo, status: int, body_bytes_sent: int, error: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            started = self._started.pop((info.connection_id, info.request_no), now)
            self.log.append(RequestRecord(
                info.method, info.path, info.target, info.file_path, info.range, status,
                body_bytes_sent, info.connection_id, info.request_no, info.has_auth_header,
                error, started, now, info.route_kind, info.server_port,
            ))
            self._idle.notify_all()


class _FaultyWriter:
    """A Python send loop applying drop/stall/corrupt rules and per-connection pacing."""

    def __init__(self, rules: list[_Rule], bucket: TokenBucket | None, released: threading.Event,
                 sent: Callable[[int], None]) -> None:
        self.drop = min((r.params["nbytes"] for r in rules if r.kind == "drop"), default=None)
        self.reset = any(r.params.get("reset") for r in rules if r.kind == "drop")
        self.stalls = sorted((r.params["after"], r.params["seconds"]) for r in rules if r.kind == "stall")
        self.trickle = min(((r.params["after"], r.params["step"], r.params["every"]) for r in rules
                            if r.kind == "trickle"), default=None)
        self.corrupt = [r.params["offset"] for r in rules if r.kind == "corrupt"]
        self.bucket = bucket
        self.released = released
        self.sent = sent

    def __call__(self, sock: socket.socket, body: BodySlice) -> int:
        sent = 0
        limit = body.length if self.drop is None else min(body.length, self.drop)
        stalls = list(self.stalls)
        try:
            while sent < limit:
                while stalls and sent >= stalls[0][0]:
                    self.released.wait(stalls.pop(0)[1])
                n = min(_CHUNK, limit - sent)
                if self.bucket is not None:
                    n = min(n, int(self.bucket.burst))
                if stalls:
                    n = min(n, max(1, stalls[0][0] - sent))
                if self.trickle is not None:
                    after, step, every = self.trickle
                    if sent >= after:
                        if self.released.wait(every):
                            raise BodyInterrupted(sent, "released")
                        n = min(n, step)
                    else:
                        n = min(n, after - sent)
                pos = body.offset + sent
                chunk = bytearray(body.read_at(pos, n))
                if not chunk:
                    raise BodyInterrupted(sent, "file shrank while sending")
                for off in self.corrupt:
                    if pos <= off < pos + len(chunk):
                        chunk[off - pos] ^= 0xFF
                if self.bucket is not None:
                    self.bucket.take(len(chunk), self.released.wait)
                sock.sendall(chunk)
                sent += len(chunk)
                self.sent(len(chunk))
        except OSError as exc:
            if isinstance(exc, BodyInterrupted):
                raise
            raise BodyInterrupted(sent, f"peer went away: {exc}") from exc
        if sent < body.length:
            if self.reset:  # RST instead of FIN when the server closes the socket
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raise BodyInterrupted(sent, "dropped by fault")
        return sent
