"""Pull a repository snapshot into the home: metadata, plan, transfer, place.

The order of effects is what keeps the store consistent under crashes:
1. the manifest (what the snapshot should hold) is saved first, so ``ls``
   and ``path`` can tell an incomplete snapshot;
2. each file is verified, then renamed into ``blobs/`` and linked into the
   snapshot as it completes, so a later pull never refetches it;
3. ``refs/<revision>`` moves to the new commit only when every file is there,
   so an interrupted update never hides the previous complete snapshot.

Sources: a short, remembered probe (:mod:`.sources`) first decides whether
any source is reachable; when none is, a cached snapshot is answered at once.
Reachable sources are ranked by health. Metadata comes from the first that
answers (Hub protocol or ModelScope). Each file gets an ordered candidate
list: the Hub-protocol sources (same ``resolve/{commit}/{path}``), then
ModelScope sources whose listing has the same path with the same size and
sha256, never matched by commit. ModelScope is listed once per pull, and only
when an earlier source failed (or when it gave the metadata). A file that
fails over keeps the ranges on disk; bytes failing verification drop their
source for the rest of the pull.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

from . import sources as netsources
from .config import Settings, Source
from .errors import (
    IntegrityError,
    LockTimeoutError,
    NetworkError,
    NotCachedError,
    OfflineError,
    QwenhomeError,
    RemoteError,
)
from .hub.hf import HubClient
from .hub.modelscope import MS_DEFAULT_REVISION, ModelScopeClient, ms_revision
from .net import HttpClient, Origin
from .progress import DONE, OFFLINE, RETRY, SOURCE, START, EventSink, ProgressEvent
from .repo.manifest import Manifest, RepoFile, check_tree
from .repo.ref import RepoRef, is_commit
from .store.cache import FileLock, Store, writing
from .transfer import partmap
from .transfer.preconnect import COUNT as PRECONNECT
from .transfer.preconnect import Preconnect
from .transfer.retry import Backoff, call_with_retries
from .transfer.work import Candidate

if TYPE_CHECKING:  # (loaded while the listing is asked: see _load_transfer)
    from .transfer.engine import EngineConfig, FileJob
    from .xetpull import XetPull

log = logging.getLogger(__name__)

# Transient failures tolerated per file before it moves on while another
# source can still be tried; the last round gets the configured count.
FAILOVER_RETRIES = 3
# Tries of a source's metadata request before the next source is asked.
METADATA_ATTEMPTS = 4

Client = HubClient | ModelScopeClient
# (settings, patient) -> decision; patient when nothing cached could answer instead.
Decider = Callable[[Settings, bool], netsources.NetworkDecision]


@dataclass(frozen=True)
class PullResult:
    ref: RepoRef
    commit: str
    snapshot: Path
    files: int
    downloaded_bytes: int = 0
    cached_bytes: int = 0
    offline: bool = False
    source: str = ""
    seconds: float = 0.0
    stats: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "repo": str(self.ref),
            "commit": self.commit,
            "snapshot": str(self.snapshot),
            "files": self.files,
            "downloaded_bytes": self.downloaded_bytes,
            "cached_bytes": self.cached_bytes,
            "offline": self.offline,
            "source": self.source,
            "seconds": round(self.seconds, 3),
            "transfer": dict(self.stats),
        }


def select_files(files: Sequence[RepoFile], include: Sequence[str], exclude: Sequence[str]) -> list[RepoFile]:
    """huggingface_hub's allow/ignore pattern semantics (fnmatch on the path)."""

    def match(path: str, patterns: Sequence[str]) -> bool:
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.rstrip("/") + "/*") for p in patterns)

    return [f for f in files if (not include or match(f.path, include)) and not match(f.path, exclude)]


def engine_config(settings: Settings) -> EngineConfig:
    from .transfer.engine import EngineConfig

    return EngineConfig(
        connections=settings.max_connections,
        stall_timeout=settings.timeouts.stall,
        rate_window=settings.timeouts.rate_window,
        min_rate=settings.timeouts.min_rate,
        max_retries=settings.max_retries,
    )


class Puller:
    """One pull. Holds the clients, the store and the event sink."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_event: EventSink | None = None,
        http: HttpClient | None = None,
        config: EngineConfig | None = None,
        decide_network: Decider | None = None,
    ) -> None:
        self.settings = settings
        self.store = Store(settings.hub_cache, settings.state_dir)
        self.http = http or HttpClient(settings.timeouts, settings.env)
        self.emit: EventSink = on_event or (lambda _e: None)
        self._config = config
        self.backoff = config.backoff if config is not None else Backoff()  # (EngineConfig's default)
        self.decide_network: Decider = decide_network or (lambda st, patient: netsources.decide(st, patient=patient))
        self.order: list[Source] = list(settings.sources)
        self.bad_sources: set[str] = set()
        # ModelScope listings by source name: path -> file; None when listing failed.
        self.ms_files: dict[str, dict[str, RepoFile] | None] = {}
        self.ms_revision = "master"
        self.outcomes: dict[Source, tuple[bool, bool, str]] = {}
        self._blob_index: dict[str, list[Path]] | None = None  # see _reuse_blob
        self._xet: XetPull | None = None
        # Of the last pull's engine runs: its widest connection count, and the
        # files the worker threads moved (a proxy, a failed handshake, odd answers).
        self.transfer_stats: dict[str, int] = {}
        self.warm: Preconnect | None = None  # connections opened ahead for the first engine run

    @property
    def config(self) -> EngineConfig:
        """The engine's options (the engine's module loads on first use)."""
        if self._config is None:
            self._config = engine_config(self.settings)
        return self._config

    @property
    def xet(self) -> XetPull:
        if self._xet is None:
            from .xetpull import XetPull

            self._xet = XetPull(self.settings, self.store, self.http, lambda e: self.emit(e), self.backoff)
        return self._xet

    # -- metadata ------------------------------------------------------------
    def clients(self) -> list[Client]:
        out: list[Client] = []
        for s in self.order:
            out.append(HubClient(s, self.http) if s.kind == "hf" else ModelScopeClient(s, self.http))
        return out

    def _note(self, source: Source, exc: QwenhomeError | None) -> None:
        if exc is None:
            self.outcomes[source] = (True, False, "ok")
        elif isinstance(exc, NetworkError) or exc.transient:
            self.outcomes[source] = (False, isinstance(exc, NetworkError), exc.code)

    def _manifest_of(self, client: Client, ref: RepoRef) -> Manifest:
        if isinstance(client, ModelScopeClient):
            manifest = client.manifest(ref)
            self.ms_files[client.source.name] = {f.path: f for f in manifest.files}
            return manifest
        return client.manifest(ref)

    def fetch_manifest(self, ref: RepoRef) -> tuple[Manifest, Source]:
        """Ask each source in order; network failures move on to the next."""
        first_error: QwenhomeError | None = None
        self.ms_revision = ms_revision(ref)
        for client in self.clients():
            def once(c: Client = client) -> Manifest:
                return self._manifest_of(c, ref)

            def note(exc: QwenhomeError, delay: float, c: Client = client) -> None:
                self.emit(ProgressEvent(RETRY, str(ref), message=f"{c.source.label}: {exc.code}; retry in {delay:.1f}s"))

            try:
                manifest = call_with_retries(once, attempts=METADATA_ATTEMPTS,
                                             backoff=self.backoff, on_retry=note)
                self._note(client.source, None)
                if client.source.kind == "hf" and ref.revision and is_commit(ref.revision):
                    # A Hub commit means nothing to ModelScope; its files still
                    # match by size and sha256 on the default branch.
                    self.ms_revision = MS_DEFAULT_REVISION
                return manifest, client.source
            except (NetworkError, RemoteError) as exc:
                self._note(client.source, exc)
                if first_error is None or isinstance(first_error, NetworkError):
                    first_error = exc
                if len(self.settings.sources) > 1:  # with one source, the error says it all
                    self.emit(ProgressEvent(SOURCE, str(ref), message=f"{client.source.label}: {exc.code}: {exc.message}"))
        if first_error is None:
            raise OfflineError("no source is configured", hint="add a source with --source URL or in config.toml")
        raise first_error

    def list_modelscope(self, ref: RepoRef) -> None:
        """List every ModelScope source not listed yet (once per pull, short retries)."""
        for s in self.order:
            if s.kind != "modelscope" or s.name in self.ms_files or s.name in self.bad_sources:
                continue
            client = ModelScopeClient(s, self.http)

            def listing(c: ModelScopeClient = client) -> list[RepoFile]:
                return c.list_files(ref, self.ms_revision)

            try:
                files = call_with_retries(listing, attempts=2, backoff=self.backoff)
                self.ms_files[s.name] = {f.path: f for f in files}
                self._note(s, None)
                self.emit(ProgressEvent(SOURCE, str(ref), message=f"{s.label}: listed {len(files)} file(s)"))
            except (NetworkError, RemoteError) as exc:
                self.ms_files[s.name] = None
                self._note(s, exc)
                self.emit(ProgressEvent(SOURCE, str(ref), message=f"{s.label}: {exc.code}: {exc.message}"))

    def unlisted_modelscope(self) -> bool:
        return any(s.kind == "modelscope" and s.name not in self.ms_files and s.name not in self.bad_sources
                   for s in self.order)

    def candidates(self, ref: RepoRef, commit: str, f: RepoFile, first: Source) -> list[Candidate]:
        """Where ``f`` can come from, in order. Hub-protocol sources share the
        manifest's commit, so they qualify only when the manifest came from
        one; a ModelScope source qualifies when its listing holds the same
        path with the same size and (where known) sha256."""
        out: list[Candidate] = []
        for s in self.order:
            if s.name in self.bad_sources:
                continue
            if s.kind == "hf":
                if first.kind == "hf":
                    out.append(Candidate(s, HubClient(s, self.http).file_url(ref, commit, f.path)))
                continue
            listing = self.ms_files.get(s.name)
            other = listing.get(f.path) if listing else None
            if other is not None and other.size == f.size and (f.sha256 is None or other.sha256 == f.sha256):
                out.append(Candidate(s, ModelScopeClient(s, self.http).file_url(ref, self.ms_revision, f.path)))
        return out

    # -- the pull -------------------------------------------------------------
    def pull(
        self,
        ref: RepoRef,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        cancel: threading.Event | None = None,
    ) -> PullResult:
        with writing(self.store.root):  # a write the store did not name (disk full, read-only home)
            return self._pull(ref, include, exclude, cancel)

    def _pull(
        self,
        ref: RepoRef,
        include: Sequence[str],
        exclude: Sequence[str],
        cancel: threading.Event | None,
    ) -> PullResult:
        t0 = time.monotonic()
        cached = self._cached(ref) if ref.revision and is_commit(ref.revision) else None
        if cached is not None:
            return cached
        if self.settings.offline_forced:
            return self._offline(ref, "offline mode (--offline or HF_HUB_OFFLINE=1)")
        patient = not self._has_snapshot(ref)
        # Nothing cached can answer and there is one source to ask: the probe
        # cannot change what is asked, only how a failure is named, so the
        # metadata request goes out beside it (see _fetch_beside_probe).
        beside_probe = patient and len(self.settings.sources) == 1
        if not beside_probe:
            decision = self.decide_network(self.settings, patient)
            if not decision.online:
                return self._unreachable(ref, decision)
            self.order = netsources.rank(self.settings.sources, decision.results,
                                         netsources.NetState.load(self.settings))
        try:
            with self._warm_start():
                return self._pull_online(ref, include, exclude, cancel, t0, beside_probe)
        finally:
            # (A copy: a request beside an unreachable verdict may still be retrying.)
            netsources.record_outcomes(self.settings, dict(self.outcomes))

    def _unreachable(self, ref: RepoRef, decision: netsources.NetworkDecision) -> PullResult:
        if any(r.code == "ca-bundle-invalid" for r in decision.results):
            # Not the network: the configured CA bundle. Building the client's
            # TLS context raises that error, naming the variable that set it.
            self.http.ssl_context()
        tls = bool(decision.results) and all(r.code.startswith("tls-") for r in decision.results)
        hint = ("a proxy may be intercepting TLS: run `qwenhome doctor`, or set SSL_CERT_FILE to its CA" if tls
                else "run `qwenhome doctor` to see what keeps the sources away")
        return self._offline(ref, f"no source reachable: {decision.reason}", hint=hint)

    def _fetch_beside_probe(self, ref: RepoRef) -> tuple[Manifest, Source] | netsources.NetworkDecision:
        """The manifest, asked at once beside the reachability probe instead
        of a round trip (or a TLS handshake) after it; or the probe's verdict
        when it finds the source unreachable, as soon as it knows, whatever
        the request is still waiting for. The request's own error is raised
        once the probe has found the source reachable."""
        box: dict[str, object] = {}
        wake = threading.Event()
        # The request's retry notices wait for the probe's verdict: a source
        # found unreachable is reported as such, and they are dropped (this
        # Puller ends with that error; its request may go on retrying).
        emit, held, gate = self.emit, [], threading.Lock()
        opened = False

        def gated(event: ProgressEvent) -> None:
            with gate:
                if not opened:
                    held.append(event)
                    return
            emit(event)

        def open_gate() -> None:
            nonlocal opened
            with gate:
                opened = True
                pending = list(held)
                held.clear()
            for event in pending:
                emit(event)

        def fetch() -> None:
            try:
                box["manifest"] = self.fetch_manifest(ref)
            except BaseException as exc:  # handed to the waiting thread
                box["error"] = exc
            finally:
                wake.set()

        def probe() -> None:
            try:
                box["decision"] = self.decide_network(self.settings, True)
            except Exception:  # a probe must never break the pull: the request tells
                log.debug("reachability probe failed; the request decides", exc_info=True)
                box["decision"] = netsources.NetworkDecision(True, ())
            finally:
                wake.set()

        self.emit = gated
        for target, name in ((probe, "qh-decide"), (fetch, "qh-metadata")):
            threading.Thread(target=target, daemon=True, name=name).start()
        while True:
            wake.wait()
            wake.clear()  # (before looking: a result landing meanwhile sets it again)
            decision = box.get("decision")
            if isinstance(decision, netsources.NetworkDecision) and not decision.online:
                return decision
            if "manifest" in box or ("error" in box and decision is not None):
                break
        open_gate()
        self.emit = emit
        error = box.get("error")
        if isinstance(error, BaseException):
            raise error
        return cast(tuple[Manifest, Source], box["manifest"])

    @contextlib.contextmanager
    def _warm_start(self) -> Iterator[None]:
        """While the listing is asked: the first source's connections open
        and the transfer's modules load; what the run did not take is closed."""
        self.warm = self._preconnect()
        threading.Thread(target=_load_transfer, daemon=True, name="qh-import").start()
        try:
            yield
        finally:
            if self.warm is not None:
                self.warm.close()
                self.warm = None

    def _preconnect(self) -> Preconnect | None:
        """The first source's connections, opened while its listing is asked
        (a Hub source's files come from it, or through its redirects)."""
        first = self.order[0] if self.order else None
        no_loops = self._config is not None and not self._config.loop_threads  # (the default has loops)
        if first is None or first.kind != "hf" or no_loops:
            return None
        # A fixed connection count opens no more ahead than it will use (an
        # unused one closed before its TLS handshake is a failed one to the server).
        fixed = self._config.connections if self._config is not None else 0
        count = min(PRECONNECT, fixed) if fixed > 0 else PRECONNECT
        try:
            return Preconnect(Origin.of(first.url), count) if self.http.direct(first.url) else None
        except QwenhomeError:  # (a URL the transfer would not take either)
            return None

    def _pull_online(
        self,
        ref: RepoRef,
        include: Sequence[str],
        exclude: Sequence[str],
        cancel: threading.Event | None,
        t0: float,
        beside_probe: bool,
    ) -> PullResult:
        try:
            got = self._fetch_beside_probe(ref) if beside_probe else self.fetch_manifest(ref)
        except NetworkError as exc:
            return self._offline(ref, f"{exc.code}: {exc.message}", exc)
        if isinstance(got, netsources.NetworkDecision):
            return self._unreachable(ref, got)
        full, source = got
        check_tree(full.files)  # before anything is written
        files = select_files(full.files, include, exclude)
        self.transfer_stats = {}
        manifest = Manifest(full.repo_id, full.repo_type, full.commit, list(files), source.name)  # a copy: extended below
        previous = self.store.load_manifest(ref, manifest.commit)
        if previous is not None:
            known = {f.path for f in files}
            manifest.files.extend(f for f in previous.files if f.path not in known)
        if previous is None or not previous.confirmed or not _covers(previous, files):
            self.store.save_manifest(manifest)

        by_etag: dict[str, list[RepoFile]] = {}
        for f in files:
            by_etag.setdefault(f.etag, []).append(f)
        cached_bytes = 0
        todo: list[RepoFile] = []
        for etag, group in by_etag.items():
            if self.store.has_blob(ref, etag, group[0].size) or self._reuse_blob(ref, group[0]):
                cached_bytes += group[0].size
                for f in group:
                    self.store.link(ref, manifest.commit, f.path, etag)
            else:
                todo.append(group[0])
        total = sum(f.size for f in todo)
        self.emit(ProgressEvent(START, str(ref), None, 0, total, files_done=len(by_etag) - len(todo),
                                files_total=len(by_etag), message=f"{manifest.commit} from {source.label}"))
        downloaded, found = self._transfer(ref, manifest.commit, todo, by_etag, source, cancel)
        cached_bytes += found

        missing = self.store.missing_files(ref, manifest.commit)
        if missing:  # pragma: no cover - the engine raises before this
            raise NotCachedError(f"{ref}: {len(missing)} file(s) missing after pull", code="snapshot-incomplete")
        if ref.revision is None or not is_commit(ref.revision):
            self.store.write_ref(ref, ref.rev, manifest.commit)
        snapshot = self.store.snapshot_dir(ref, manifest.commit)
        snapshot.mkdir(parents=True, exist_ok=True)
        result = PullResult(ref, manifest.commit, snapshot, len(files), downloaded, cached_bytes,
                            False, source.name, time.monotonic() - t0, dict(self.transfer_stats))
        self.emit(ProgressEvent(DONE, str(ref), None, downloaded, total, files_done=len(by_etag),
                                files_total=len(by_etag), message=str(snapshot)))
        return result

    def _transfer(
        self,
        ref: RepoRef,
        commit: str,
        todo: list[RepoFile],
        by_etag: dict[str, list[RepoFile]],
        source: Source,
        cancel: threading.Event | None,
    ) -> tuple[int, int]:
        """Fetch ``todo`` under per-blob locks, in rounds: blobs another process
        is fetching are waited for, then found in the store. Returns the bytes
        downloaded and those another process placed meanwhile."""
        downloaded = found = 0
        remaining = list(todo)
        first_error: QwenhomeError | None = None
        failed = 0

        def install(job: FileJob) -> None:
            self.store.install_blob(ref, job.key, job.partial)
            if job.xet is not None:
                self.xet.keep(job.key, job.xet)
            for f in by_etag[job.key]:
                self.store.link(ref, commit, f.path, job.key)

        while remaining:
            held: list[tuple[RepoFile, FileLock]] = []
            waiting: list[RepoFile] = []
            try:  # (a lock file that cannot be made, disk full, releases those taken)
                for f in remaining:
                    lk = self.store.file_lock(f.etag)
                    (held.append((f, lk)) if lk.acquire() else waiting.append(f))
                if not held:
                    lk = self.store.file_lock(waiting[0].etag)
                    wait = self.settings.timeouts.lock
                    if not lk.acquire(timeout=wait):  # (looping on would hang behind a stopped holder)
                        raise LockTimeoutError(
                            f"{waiting[0].path} of {ref}: another process has been fetching it for {wait:.0f} s",
                            hint=f"wait for the other qwenhome process, or stop it (it holds {lk.path})")
                    held.append((waiting.pop(0), lk))
                jobs = []
                for f, _ in held:
                    if self.store.has_blob(ref, f.etag, f.size):
                        found += f.size
                        install_links = by_etag[f.etag]
                        for g in install_links:
                            self.store.link(ref, commit, g.path, f.etag)
                        continue
                    jobs.append(f)
                if jobs:
                    got, errors = self._run_rounds(ref, commit, jobs, source, install, cancel)
                    downloaded += got
                    for etag, err in errors.items():
                        failed += 1
                        if first_error is None:
                            path = by_etag[etag][0].path
                            if not err.message.startswith(f"{path}:"):  # (name the file: the cause may not)
                                err.message = f"{path}: {err.message}"
                            first_error = err
            finally:
                for _, lk in held:
                    lk.release()
            remaining = waiting
        if first_error is not None:
            first_error.message = f"{failed} file(s) of {ref} failed: {first_error.message}"
            first_error.args = (first_error.message,)
            raise first_error
        return downloaded, found

    def _run_rounds(
        self,
        ref: RepoRef,
        commit: str,
        files: list[RepoFile],
        first: Source,
        install: Callable[[FileJob], None],
        cancel: threading.Event | None,
    ) -> tuple[int, dict[str, QwenhomeError]]:
        """Run the engine over ``files`` in failover rounds.

        While another source may still be tried (more candidates, or a
        ModelScope source not listed yet), files move on after a few transient
        failures; failed files are then retried with ModelScope candidates
        added, and a last round uses the full retry count. Ranges on disk stay
        between rounds."""
        from .transfer.engine import FileJob, TransferEngine  # (loaded already: _load_transfer)

        if first.kind == "modelscope":
            self.list_modelscope(ref)  # the only way to learn what else ModelScope has
        downloaded = 0
        pending = list(files)
        errors: dict[str, QwenhomeError] = {}
        may_be_quick = True
        xet = self.xet.jobs(ref, commit, files, first)  # (the first round only: later ones fail over)
        while pending:
            jobs: list[FileJob] = []
            errors = {}
            for f in pending:
                cands = self.candidates(ref, commit, f, first)
                if cands:
                    jobs.append(FileJob(f.etag, f.path, f.size, f.sha256, f.blob_id, cands,
                                        self.store.partial_path(f.etag), xet.pop(f.etag, None)))
                else:
                    errors[f.etag] = RemoteError(
                        f"{f.path}: no usable source left", code="no-source",
                        hint="every source failed or serves other content; see `qwenhome sources --probe`")
            more = self.unlisted_modelscope() or any(len(j.candidates) > 1 for j in jobs)
            quick = may_be_quick and more and self.config.max_retries > FAILOVER_RETRIES
            config = replace(self.config, max_retries=FAILOVER_RETRIES) if quick else self.config
            if jobs:
                engine = TransferEngine(self.http, config, on_event=self.emit, repo=str(ref))
                warm, self.warm = self.warm, None  # (the first round's: later ones connect anew)
                try:
                    errors.update(engine.run(jobs, install, cancel, warm))
                finally:
                    if warm is not None:
                        warm.close()  # (those the run did not take)
                downloaded += int(engine.stats.get("bytes", 0))
                ts = self.transfer_stats
                ts["threaded_files"] = ts.get("threaded_files", 0) + int(engine.stats.get("threaded_files", 0))
                ts["connections"] = max(ts.get("connections", 0), int(engine.stats.get("connections", 0)))
                ts["loop_reads"] = ts.get("loop_reads", 0) + int(engine.stats.get("loop_reads", 0))
                ts["xet_bytes"] = ts.get("xet_bytes", 0) + int(engine.stats.get("xet_bytes", 0))
                ts["local_bytes"] = self.xet.local_bytes
                if engine.stats.get("request_ms"):
                    ts["request_ms"] = int(engine.stats["request_ms"])
                for name in engine.bad_sources - self.bad_sources:
                    src = next((s for s in self.order if s.name == name), None)
                    if src is not None:
                        self.outcomes[src] = (False, False, "hash-mismatch")
                self.bad_sources |= engine.bad_sources
            failed = [f for f in pending if f.etag in errors]
            if not failed:
                return downloaded, {}
            if all(isinstance(errors[f.etag], IntegrityError) for f in failed):
                break
            if self.unlisted_modelscope():
                self.list_modelscope(ref)  # new candidates: another quick round may pay
                may_be_quick = True
            elif quick:
                may_be_quick = False  # a last round with the full retry count
            else:
                break
            pending = failed
            for f in pending:
                self._forget_validator(f)
            self.emit(ProgressEvent(SOURCE, str(ref), message=f"{len(pending)} file(s) failing over; trying again"))
        return downloaded, errors

    def _forget_validator(self, f: RepoFile) -> None:
        """The next round may use another source, whose ETag differs: keep the
        ranges, drop the If-Range validator (the hash check still guards)."""
        partial = self.store.partial_path(f.etag)
        done, validator = partmap.load(partial, f.etag, f.size)
        if validator is not None and done.starts:
            try:
                partmap.save(partial, f.etag, f.size, done, None)
            except OSError as exc:  # kept: a source with another ETag then sends the file whole
                log.debug("validator of %s not dropped: %s", partial, exc)

    def _reuse_blob(self, ref: RepoRef, f: RepoFile) -> bool:
        """Hard-link an identical blob from another repository of the home."""
        if self._blob_index is None:
            # Listed once per pull. (The pulled repository's own entries are
            # harmless: a blob it already has whole is not looked up, and one
            # of the wrong size fails the size check.)
            self._blob_index = self.store.blobs_by_name()
        for other in self._blob_index.get(f.etag, ()):
            try:
                if other.stat().st_size != f.size:
                    continue
                self.store.hardlink_blob(ref, f.etag, other)
                return True
            except OSError as exc:  # another filesystem, no hard links: fetched instead
                log.debug("blob %s not reused from %s: %s", f.etag, other, exc)
                continue
        return False

    def _has_snapshot(self, ref: RepoRef) -> bool:
        try:
            self.store.snapshot_path(ref)
        except NotCachedError:
            return False
        return True

    def _cached(self, ref: RepoRef) -> PullResult | None:
        try:
            snap = self.store.snapshot_path(ref)
        except NotCachedError:
            return None
        commit = snap.name
        manifest = self.store.load_manifest(ref, commit)
        n = len(manifest.files) if manifest else sum(1 for _ in snap.rglob("*") if not _.is_dir())
        return PullResult(ref, commit, snap, n, 0, manifest.total_size if manifest else 0, False, "cache")

    def _offline(self, ref: RepoRef, reason: str, cause: QwenhomeError | None = None,
                 hint: str | None = None) -> PullResult:
        try:
            snap = self.store.snapshot_path(ref)
        except NotCachedError as exc:
            if cause is not None:
                raise cause from None
            raise OfflineError(f"offline ({reason}) and {exc.message}", hint=hint or exc.hint, repo=str(ref)) from None
        self.emit(ProgressEvent(OFFLINE, str(ref), message=f"{reason}; using the cached snapshot"))
        manifest = self.store.load_manifest(ref, snap.name)
        n = len(manifest.files) if manifest else 0
        return PullResult(ref, snap.name, snap, n, 0, manifest.total_size if manifest else 0, True, "cache")


def _load_transfer() -> None:
    """Import the transfer engine and the Xet side of a pull while the
    listing is asked (20-50 ms of a pull's start-up on a busy machine); the
    pull would import them after it otherwise."""
    try:
        from . import xetpull  # noqa: F401
        from .transfer import engine  # noqa: F401
    except Exception:  # the pull's own import says what is wrong
        log.debug("transfer not loaded ahead", exc_info=True)


def _covers(saved: Manifest, files: Sequence[RepoFile]) -> bool:
    """Whether ``saved`` already lists every one of ``files`` (path, size,
    blob): then it need not be written again (a pull of a complete snapshot
    writes nothing, and works on a read-only home)."""
    have = {(f.path, f.size, f.etag) for f in saved.files}
    return all((f.path, f.size, f.etag) in have for f in files)


def pull(
    settings: Settings,
    ref: RepoRef,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    on_event: EventSink | None = None,
    cancel: threading.Event | None = None,
    http: HttpClient | None = None,
    config: EngineConfig | None = None,
    decide_network: Decider | None = None,
) -> PullResult:
    """Pull ``ref`` into the home of ``settings``. See the module docstring.

    ``decide_network`` replaces the reachability probe (tests inject one)."""
    return Puller(settings, on_event=on_event, http=http, config=config,
                  decide_network=decide_network).pull(ref, include, exclude, cancel)
