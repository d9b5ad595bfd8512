"""The mirror's request handler: routes to answers.

Threaded, HTTP/1.1 keep-alive, file bodies sent with ``sendfile`` (zero-copy).
Serves what stock ``huggingface_hub`` 2.4 asks for: revision info, tree
listings, ``paths-info``, ``HEAD``/``GET`` on ``resolve`` with the Hub's
headers and single byte ranges, the Hub's error codes (``X-Error-Code``) and,
with Xet on, the token route, the CAS and the xorb bytes (:mod:`.cas`).

A route asked of a listener (:mod:`.listener`) that does not serve its role
is not found (404), as on another host.

Safety: every target is parsed by :func:`.protocol.parse_target` (paths
validated after decoding), files come only from the backend's listing, and the
real path of a file is checked to be inside the backend's root before it is
opened. With a token set, everything except signed URLs (``/cdn/``, xorbs) and
the CAS (which takes the Xet access tokens the token route gives) needs
``Authorization: Bearer <token>``. Methods other than GET and HEAD get 405
(the mirror is read-only; ``paths-info`` is a POST that reads); numbers in
headers and queries are bounded, request bodies too, and any failure still
gets an answer (500) rather than a dropped connection.

Over a :class:`~.pullthrough.PullThroughBackend`, a listed file whose blob is
missing is streamed while one upstream transfer fills the store
(:meth:`Handler._send_pulled`); a response completes only with verified bytes.
"""

from __future__ import annotations

import contextlib
import email.utils
import hmac
import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import parse_qs, quote, urlencode

from ..errors import QwenhomeError, RepoNotFoundError, RevisionNotFoundError
from ..net.headtime import HeadReader
from .cas.body import send_xorb_body
from .cas.service import Answer
from .catalog import FileEntry, Snapshot
from .hooks import BodyInterrupted, BodySlice, RequestInfo
from .listener import Listener
from .lookup import EntryMissing, locate
from .protocol import (
    BAD_REQUEST,
    ENTRY_NOT_FOUND,
    METHOD_NOT_ALLOWED,
    REPO_NOT_FOUND,
    REVISION_NOT_FOUND,
    X_ERROR_MESSAGE,
    X_LINKED_ETAG,
    X_LINKED_SIZE,
    X_REPO_COMMIT,
    BadQuery,
    BadTarget,
    Route,
    Unsatisfiable,
    count_param,
    parse_range,
    parse_target,
)
from .pullthrough import PullThroughBackend, UpstreamError, stream
from .responding import ResponseWriter
from .responses import paths_info, repo_info, repo_list, tree_entries
from .sending import sendfile_body

log = logging.getLogger(__name__)

_RESUME_RE = re.compile(r"^bytes=\s*[1-9]\d*-$")  # an open-ended range: a client resuming a download
_TEXT_SUFFIXES = (".json", ".txt", ".md", ".py", ".jinja", ".yaml", ".yml", ".gitattributes")
# Routes that carry their own credential (a signed URL, a Xet access token), not the mirror's token.
_OWN_CREDENTIALS = frozenset({"cdn", "xorb", "reconstruction", "cas-file", "cas-xorb"})
_XET_KINDS = frozenset({"xet-read-token", "xet-write-token", "reconstruction", "cas-file", "cas-xorb", "xorb"})
MAX_POST_BODY = 1 << 20  # paths-info: a list of paths


def _slow_head() -> TimeoutError:
    return TimeoutError("the request head did not come whole in time")  # (http.server closes the connection)


def _content_type(path: str) -> str:
    return "text/plain; charset=utf-8" if path.lower().endswith(_TEXT_SUFFIXES) else "application/octet-stream"


class Handler(ResponseWriter):
    protocol_version = "HTTP/1.1"
    server_version = "qwenhome-mirror"
    sys_version = ""
    disable_nagle_algorithm = True
    server: Listener

    # -- connection lifecycle ---------------------------------------------
    def setup(self) -> None:
        mirror = self.server.mirror
        super().setup()
        self.connection.settimeout(mirror.idle_timeout)  # idle keep-alive connections end
        self.conn_id = next(mirror.conn_ids)
        self.request_count = 0
        if mirror.hooks is not None:
            mirror.hooks.on_connect(self.conn_id)

    def finish(self) -> None:
        self.server.leave(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def handle_one_request(self) -> None:
        """One request; its head must be whole within ``head_timeout`` of its
        first byte (a client sending it a byte at a time is cut: slow-loris),
        and until it is, the connection may be closed to make room."""
        self.server.wait_head(self.connection)
        rfile = self.rfile
        self.rfile = HeadReader(rfile, self.connection, self.server.mirror.head_timeout, _slow_head)  # type: ignore[assignment]
        try:
            super().handle_one_request()
        finally:
            self.rfile = rfile

    def parse_request(self) -> bool:
        reader = self.rfile
        ok = super().parse_request()
        if isinstance(reader, HeadReader):
            reader.done()
            self.rfile = reader.fp  # the body, if any, is read without the bound
        self.server.serving(self.connection)
        return ok

    def __getattr__(self, name: str) -> Any:
        # Methods no route takes (OPTIONS, TRACE, made-up ones) get the same
        # JSON 405 as writes, not http.server's bare 501 page; like that page,
        # before the hooks (a reachability probe's OPTIONS * is no request).
        if name.startswith("do_"):
            return self._unknown_method
        raise AttributeError(name)

    def _unknown_method(self) -> None:
        self.close_connection = True  # any body stays unread
        self._send_hub_error(405, METHOD_NOT_ALLOWED, f"{self.command} is not allowed: the mirror is read-only",
                             False, {"Allow": "GET, HEAD"})

    def log_message(self, format: str, *args: Any) -> None:
        """The library prints nothing; observers use hooks (and the debug log)."""

    def do_GET(self) -> None:
        self._handle(head=False)

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def _other_method(self) -> None:
        self._handle(head=False)  # answered 405 there (but paths-info), after the hooks and the token check

    # The mirror is read-only: methods that would change a repository get the
    # Hub's 405 with a JSON error, not http.server's bare 501 page.
    do_POST = do_PUT = do_DELETE = do_PATCH = _other_method

    # -- dispatch ------------------------------------------------------------
    def _handle(self, *, head: bool) -> None:
        mirror = self.server.mirror
        self.request_count += 1
        if self.headers.get("Content-Length", "0").strip() not in ("", "0") or "Transfer-Encoding" in self.headers:
            self.close_connection = True  # an unread request body would desync keep-alive
        auth = self.headers.get("Authorization")
        info = RequestInfo(
            method=self.command,
            target=self.path,
            path=self.path.partition("?")[0],
            headers=cast(Mapping[str, str], self.headers),
            connection_id=self.conn_id,
            request_no=self.request_count,
            client=self.client_address[0],
            range=self.headers.get("Range"),
            has_auth_header=auth is not None,
            server_port=self.server.port,
        )
        self._info = info
        self._status = 0
        self._sent = 0
        self._error = None
        route: Route | None = None
        try:
            route = parse_target(self.path)
            info.route_kind, info.file_path = route.kind, route.path
        except BadTarget:
            route = None
        info.authorized = mirror.token is None or (route is not None and route.kind in _OWN_CREDENTIALS) or (
            auth is not None and hmac.compare_digest(auth.encode("utf-8", "surrogateescape"),
                                                     f"Bearer {mirror.token}".encode()))
        posting = self.command == "POST" and route is not None and route.kind == "paths-info"
        try:
            canned = mirror.hooks.on_request(info) if mirror.hooks is not None else None
            if canned is not None:
                self._send_canned(canned, head)
            elif not info.authorized:
                self._send_json(401, {"error": "Invalid credentials in Authorization header"}, head,
                                {"WWW-Authenticate": 'Bearer realm="qwenhome-mirror"'})
            elif self.command not in ("GET", "HEAD") and not posting:
                self.close_connection = True  # any body stays unread
                self._send_hub_error(405, METHOD_NOT_ALLOWED, f"{self.command} is not allowed: the mirror is read-only",
                                     head, {"Allow": "GET, HEAD"})
            elif route is None:
                self._send_json(400, {"error": "Invalid request path"}, head)
            elif route.role not in self.server.roles or (route.kind in _XET_KINDS and mirror.xet is None):
                self._send_json(404, {"error": "Not found"}, head)
            else:
                self._dispatch(route, head)
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.close_connection = True
            self._error = self._error or type(exc).__name__
        except Exception as exc:  # a bug must not drop the connection without an answer
            log.debug("mirror: %s %s failed", self.command, self.path[:200], exc_info=True)
            self.close_connection = True
            self._error = self._error or type(exc).__name__
            if self._status:  # the status line went out already: all a client can see is the close
                raise
            self._send_json(500, {"error": "internal error in the mirror"}, head)
        finally:
            mirror.count(info.route_kind or "other", self._sent)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("mirror: %s %s %s -> %d, %d bytes", info.method, info.route_kind or "?",
                          info.path[:120], self._status, self._sent)
            if mirror.hooks is not None:
                mirror.hooks.on_response(info, self._status, self._sent, self._error)

    def _dispatch(self, route: Route, head: bool) -> None:
        mirror = self.server.mirror
        try:
            if route.kind == "list":
                self._send_json(200, repo_list(
                    mirror.backend.repos(), route.repo_type, search=route.param("search"),
                    author=route.param("author"), limit=count_param(route, "limit"),
                ), head)
            elif route.kind == "info":
                snap = mirror.backend.snapshot(route.repo_type, route.repo_id, route.revision)
                self._send_json(200, repo_info(snap, blobs=route.flag("blobs")), head)
            elif route.kind == "tree":
                self._send_tree(route, head)
            elif route.kind == "paths-info":
                self._send_paths_info(route, head)
            elif route.kind in _XET_KINDS:
                self._send_xet(route, head)
            elif route.kind == "cdn" and not mirror.check_signature(route):
                self._send_json(403, {"error": "Invalid or missing signature"}, head)
            else:
                try:
                    snap, entry, real = locate(mirror.backend, route)
                except EntryMissing as missing:
                    pending = missing.snap.files.get(route.path)
                    if mirror.pull_through is None or route.kind != "resolve" or pending is None:
                        raise
                    self._send_pulled(mirror.pull_through, missing.snap, pending, head)
                    return
                if route.kind == "resolve" and mirror.redirect_lfs and entry.sha256:
                    self._send_redirect(snap, entry, head)
                else:
                    self._send_file(snap, entry, real, head)
        except BadQuery as exc:
            self._send_hub_error(400, BAD_REQUEST, str(exc), head)
        except RepoNotFoundError:
            self._send_hub_error(404, REPO_NOT_FOUND, "Repository not found", head)
        except RevisionNotFoundError:
            self._send_hub_error(404, REVISION_NOT_FOUND, "Invalid rev id: " + route.revision, head)
        except EntryMissing as missing:
            self._send_hub_error(404, ENTRY_NOT_FOUND, "Entry not found", head,
                                 {X_REPO_COMMIT: missing.snap.commit})
        except UpstreamError as exc:  # the mirror's sources failed: the client may retry later
            if exc.transient:
                self._send_json(503, {"error": exc.message}, head, {"Retry-After": "5"})
            else:
                self._send_json(502, {"error": exc.message}, head)
        except QwenhomeError as exc:
            self._send_json(500, {"error": exc.message}, head)
        except (BrokenPipeError, ConnectionResetError):
            raise
        except OSError as exc:  # unreadable file or folder: say so instead of dropping the connection
            if self._status:
                raise
            self._send_json(500, {"error": f"cannot read from the mirror's disk: {exc.strerror or exc}"}, head)

    # -- listings ------------------------------------------------------------------
    def _send_tree(self, route: Route, head: bool) -> None:
        mirror = self.server.mirror
        snap = mirror.backend.snapshot(route.repo_type, route.repo_id, route.revision)
        entries = tree_entries(snap, route.path, recursive=route.flag("recursive"))
        if entries is None:
            raise EntryMissing(snap)
        start = count_param(route, "cursor") or 0
        page = entries[start : start + mirror.tree_page_size]
        if mirror.xet is not None:
            page = mirror.xet.add_xet_hashes(snap, page)
        headers: dict[str, str] = {X_REPO_COMMIT: snap.commit}
        if start + mirror.tree_page_size < len(entries):
            query = {k: v[-1] for k, v in route.query.items() if k != "cursor"}
            query["cursor"] = str(start + mirror.tree_page_size)
            base = mirror.base_url("hub", self.headers.get("Host"), self.server)
            headers["Link"] = f'<{base}{self._info.path}?{urlencode(query)}>; rel="next"'
        self._send_json(200, page, head, headers)

    def _send_paths_info(self, route: Route, head: bool) -> None:
        """``POST paths-info`` with ``paths`` (form fields or JSON): the entries of those paths."""
        if self.command != "POST":
            self._send_hub_error(405, METHOD_NOT_ALLOWED, "paths-info is a POST", head, {"Allow": "POST"})
            return
        length = self.headers.get("Content-Length", "").strip()
        if not (length.isascii() and length.isdigit()) or int(length) > MAX_POST_BODY:
            self._send_json(413 if length.isdigit() else 411, {"error": "paths-info needs a body of at most "
                                                               f"{MAX_POST_BODY} bytes with a Content-Length"}, head)
            return
        raw = self.rfile.read(int(length)).decode("utf-8", "replace")
        try:
            data = json.loads(raw) if raw.lstrip().startswith("{") else parse_qs(raw)
            paths = data.get("paths", []) if isinstance(data, dict) else []
            paths = [paths] if isinstance(paths, str) else paths
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise ValueError("paths must be a list of strings")
        except ValueError as exc:
            self._send_hub_error(400, BAD_REQUEST, f"invalid paths-info body: {exc}", head)
            return
        mirror = self.server.mirror
        snap = mirror.backend.snapshot(route.repo_type, route.repo_id, route.revision)
        found = paths_info(snap, paths)
        if mirror.xet is not None:
            found = mirror.xet.add_xet_hashes(snap, found)
        self._send_json(200, found, head, {X_REPO_COMMIT: snap.commit})

    # -- Xet ---------------------------------------------------------------------------
    def _send_xet(self, route: Route, head: bool) -> None:
        mirror = self.server.mirror
        xet = mirror.xet
        assert xet is not None
        host, auth = self.headers.get("Host"), self.headers.get("Authorization")
        if route.kind in ("xet-read-token", "xet-write-token"):
            answer = xet.token(route, mirror.base_url("cas", host, self.server))
        elif route.kind == "reconstruction":
            answer = xet.reconstruction(route, auth, self.headers.get("Range"),
                                        mirror.base_url("xorb", host, self.server))
        elif route.kind == "xorb":
            answer = xet.xorb(route, self.headers.get("Range"))
        elif head:
            answer = xet.exists(route, auth)
        else:  # the existence checks have no body to GET
            self._send_hub_error(405, METHOD_NOT_ALLOWED, "this CAS route answers HEAD only", head, {"Allow": "HEAD"})
            return
        self._send_answer(answer, head)

    def _send_answer(self, answer: Answer, head: bool) -> None:
        body = answer.stream
        try:
            length = answer.length if answer.length is not None else (
                body.length if body is not None else len(answer.body))
            self._start(answer.status, answer.headers, length)
            if head:
                return
            if body is not None:
                self._write_body(body, send_xorb_body, self.server.mirror.hooks)
            elif answer.body:
                self.wfile.write(answer.body)
                self._sent = len(answer.body)
        finally:
            if body is not None:
                body.file.close()

    # -- files ---------------------------------------------------------------------------
    def _file_headers(self, snap: Snapshot, entry: FileEntry) -> dict[str, str]:
        headers = {
            X_REPO_COMMIT: snap.commit,
            "ETag": f'"{entry.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": _content_type(entry.path),
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(entry.path.rsplit('/', 1)[-1])}",
        }
        if entry.sha256:
            headers[X_LINKED_ETAG] = f'"{entry.sha256}"'
            headers[X_LINKED_SIZE] = str(entry.size)
            mirror = self.server.mirror
            if mirror.xet is not None:
                host = self.headers.get("Host")
                headers.update(mirror.xet.resolve_headers(snap, entry, mirror.base_url("hub", host, self.server),
                                                          mirror.base_url("cas", host, self.server)))
        return headers

    def _send_redirect(self, snap: Snapshot, entry: FileEntry, head: bool) -> None:
        mirror = self.server.mirror
        headers = self._file_headers(snap, entry)
        headers["ETag"] = f'"{entry.blob_id}"'  # the Hub's 302 carries the pointer's oid
        headers["Location"] = mirror.cdn_location(snap, entry)
        self._send_bytes(302, b"", head, headers)

    def _body_range(self, headers: dict[str, str], size: int, head: bool,
                    etag: str = "") -> tuple[int, int, int] | None:
        """``(status, offset, length)`` for this request's Range, or None once a 416 went out."""
        rng_header = self.headers.get("Range")
        pt = self.server.mirror.pull_through
        if rng_header and pt is not None and pt.tainted(etag) and _RESUME_RE.match(rng_header.strip()):
            # A resume after a pull-through stream was cut off for bytes that failed
            # verification: the client's prefix may hold them, so it gets the whole file.
            rng_header = None
        if_range = self.headers.get("If-Range")
        if rng_header and if_range is not None and if_range.strip() not in (
            headers["ETag"], f"W/{headers['ETag']}", headers.get("Last-Modified"),
        ):
            rng_header = None  # the client's copy is stale: send the whole file
        try:
            rng = parse_range(rng_header, size)
        except Unsatisfiable:
            message = f"Requested range not satisfiable: the file has {size} bytes"
            self._send_json(416, {"error": message}, head,
                            {**headers, "Content-Type": "application/json; charset=utf-8",
                             "Content-Range": f"bytes */{size}", X_ERROR_MESSAGE: message})
            return None
        if rng is None:
            return 200, 0, size
        headers["Content-Range"] = f"bytes {rng[0]}-{rng[1]}/{size}"
        return 206, rng[0], rng[1] - rng[0] + 1

    def _send_pulled(self, pt: PullThroughBackend, snap: Snapshot, entry: FileEntry, head: bool) -> None:
        """A listed file whose blob is missing: stream it while one upstream transfer runs."""
        real = pt.present(snap, entry)
        if real is not None:
            self._send_file(snap, entry, real, head)
            return
        headers = self._file_headers(snap, entry)
        span = self._body_range(headers, entry.size, head, entry.etag)
        if span is None:
            return
        status, offset, length = span
        if head and entry.size:  # metadata only: no transfer for a HEAD
            self._start(status, headers, length)
            return
        # (An empty file is fetched on HEAD too: clients create it without a GET.)
        flight = pt.fetch(snap, entry)
        # Wait a little for the first byte, so that an upstream failing at once gets a status.
        flight.wait_for_bytes(offset, timeout=self.server.mirror.first_byte_wait)
        if flight.state != "running":
            real = pt.present(snap, entry)
            if real is not None:
                self._send_file(snap, entry, real, head)
                return
            err = flight.error or QwenhomeError("upstream transfer failed", code="pull-through-failed")
            raise UpstreamError(err)
        self._start(status, headers, length)
        if length == 0 or head:
            return
        try:
            self._sent = stream(self.connection, flight, offset, length)
            if self.server.mirror.xet is not None:  # verified and in the store: Xet clients next
                self.server.mirror.xet.file_id(snap, entry)
        except BodyInterrupted as exc:
            self._sent = exc.sent
            self._error = str(exc) or "interrupted"
            self.close_connection = True
            # The connection closes short of Content-Length: clients see an incomplete
            # body (huggingface_hub then resumes, and gets the whole file: see taint).
            if exc.sent:
                pt.taint(entry.etag)

    def _send_file(self, snap: Snapshot, entry: FileEntry, real: str, head: bool) -> None:
        with open(real, "rb", buffering=0) as fh:
            st = os.fstat(fh.fileno())
            size = st.st_size
            if size != entry.size:  # changed on disk since it was listed
                self._send_json(503, {"error": "file changed on the mirror; retry"}, head, {"Retry-After": "1"})
                return
            headers = self._file_headers(snap, entry)
            headers["Last-Modified"] = email.utils.formatdate(st.st_mtime, usegmt=True)
            span = self._body_range(headers, size, head, entry.etag)
            if span is None:
                return
            status, offset, length = span
            self._start(status, headers, length)
            if head or length == 0:
                return
            self._write_body(BodySlice(fh, offset, length, size), sendfile_body, self.server.mirror.hooks)
