"""What every request must pass before any route sees it.

- ``Host`` names this server: the address it was bound to, the address the
  connection reached, ``localhost``, ``127.0.0.1`` or ``[::1]``, on the
  server's own port; or a value given with ``--allowed-host``. Anything else
  is a DNS-rebinding page that found its way to this port:
  403 ``host-not-allowed``.
- ``Origin``, when the browser sends one, is this server's own origin (or an
  allowed host's): a page from any other site cannot start pulls, remove
  models, chat or re-hash the home with a body-less POST:
  403 ``origin-not-allowed``. Clients that are not browsers send no
  ``Origin`` and are not affected.
- A request body is at most the route's limit: a declared
  ``Content-Length`` over it is refused before one byte is read, and a
  chunked body is counted as it arrives and cut at the limit:
  413 ``request-too-large``.

A pure ASGI middleware: streaming answers pass through untouched.

    app.add_middleware(RequestGuard, allow=AllowList.parse("127.0.0.1", ["box.lan"]), limits=BodyLimits(...))
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..errors import QwenhomeError, UsageError
from .errors import ApiError, error_body

log = logging.getLogger("qwenhome.app.guard")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("", "0.0.0.0", "::")
DEFAULT_PORTS = {"http": 80, "https": 443}
MiB = 1024 * 1024
DEFAULT_BODY_LIMIT = 4 * MiB  # a long chat history is well under 1 MiB of JSON


def split_host(value: str, scheme: str = "http") -> tuple[str, int | None]:
    """``(name, port)`` of a ``Host`` value (``name``, ``name:port``, ``[v6]:port``);
    the name lower-cased, without brackets. ``port`` is None when not given.
    Raises ValueError for anything else (a path, user info, a bad port)."""
    if not value or any(c in value for c in "/?#@\\ \t") or value != value.strip():
        raise ValueError(f"not a host: {value!r}")
    parts = urlsplit(f"{scheme}://{value}")
    name = parts.hostname
    if not name:
        raise ValueError(f"not a host: {value!r}")
    return name, parts.port  # .port raises ValueError for a bad port


def parse_origin(value: str) -> tuple[str, str, int]:
    """``(scheme, name, port)`` of an ``Origin`` header (port defaulted from
    the scheme). Raises ValueError for ``null`` and anything not http(s)."""
    parts = urlsplit(value)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path or parts.query or parts.username:
        raise ValueError(f"not an http(s) origin: {value!r}")
    return parts.scheme, parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme]


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class AllowList:
    """Host names this server answers to. ``own`` names count only on the
    server's own port; ``extra`` entries (from ``--allowed-host``) on their
    port, or on any port when they name none (a reverse proxy on 443, an SSH
    tunnel's local port)."""

    own: frozenset[str] = frozenset(LOOPBACK_NAMES)
    extra: tuple[tuple[str, int | None], ...] = ()

    @classmethod
    def parse(cls, bind_host: str, allowed: Iterable[str] = ()) -> AllowList:
        """The list for a server bound to ``bind_host``; raises UsageError
        (``invalid-allowed-host``) for an ``--allowed-host`` value that is not
        ``NAME`` or ``NAME:PORT``."""
        own = set(LOOPBACK_NAMES)
        if bind_host not in WILDCARD_BINDS:
            own.add(bind_host.strip("[]").lower())
        extra = []
        for value in allowed:
            try:
                extra.append(split_host(value.strip()))
            except ValueError as exc:
                raise UsageError(
                    f"--allowed-host {value!r} is not a host name",
                    code="invalid-allowed-host",
                    hint="give a name or address, optionally with :PORT, e.g. --allowed-host box.lan:8000",
                ) from exc
        return cls(frozenset(own), tuple(extra))

    def allows(self, name: str, port: int | None, server: tuple[str, int | None] | None) -> bool:
        """Whether ``name:port`` (as the client wrote it) names this server;
        ``server`` is the connection's local ``(address, port)``."""
        for ename, eport in self.extra:
            if name == ename and (eport is None or eport == port):
                return True
        if server is None or server[1] is None or port != server[1]:
            return False
        # The address the connection reached: an IP literal cannot be rebound.
        local = str(server[0]).lower()
        return name in self.own or (name == local and _is_ip(name))

    def names(self) -> list[str]:
        """For messages: what is allowed, as a user would write it."""
        shown = [f"[{n}]" if ":" in n else n for n in sorted(self.own)]
        shown += [(f"[{n}]" if ":" in n else n) + (f":{p}" if p else "") for n, p in self.extra]
        return shown


@dataclass(frozen=True)
class BodyLimits:
    """Largest request body per path (exact match), else ``default``."""

    default: int = DEFAULT_BODY_LIMIT
    routes: Mapping[str, int] = field(default_factory=dict)

    def for_path(self, path: str) -> int:
        return self.routes.get(path, self.default)


def body_limit_from_mib(mib: float) -> int:
    """``--max-body-mib`` in bytes; raises UsageError unless it is positive and
    at most 1024 MiB."""
    if not 0 < mib <= 1024:
        raise UsageError(f"--max-body-mib {mib:g} is out of range", code="invalid-body-limit",
                         hint="give a size in MiB between 0.01 and 1024 (default 4)")
    return max(1024, int(mib * MiB))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _human(n: int) -> str:
    return f"{n / MiB:g} MiB" if n >= MiB else f"{n} bytes"


class RequestGuard:
    """The ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp, *, allow: AllowList | None = None, limits: BodyLimits | None = None) -> None:
        self.app = app
        self.allow = allow or AllowList()
        self.limits = limits or BodyLimits()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._check_names(scope)
        if refusal is None:
            refusal = self._check_declared_size(scope)
        if refusal is not None:
            await _answer(send, refusal)
            return
        await self._guarded(scope, receive, send)

    def _check_names(self, scope: Scope) -> ApiError | None:
        server = scope.get("server")
        host = _header(scope, b"host") or ""
        try:
            name, port = split_host(host, scope.get("scheme", "http"))
            port = port or DEFAULT_PORTS.get(scope.get("scheme", "http"))
            ok = self.allow.allows(name, port, server)
        except ValueError:
            ok = False
        if not ok:
            return ApiError(
                403,
                f"this server does not answer to the host name {host!r}",
                code="host-not-allowed",
                hint="open it as http://localhost:PORT or http://127.0.0.1:PORT, or launch with "
                     f"--allowed-host {host or 'NAME'} to allow that name (allowed: {', '.join(self.allow.names())})",
            )
        origin = _header(scope, b"origin")
        if origin is None:
            return None
        try:
            _scheme, oname, oport = parse_origin(origin)
            ok = self.allow.allows(oname, oport, server)
        except ValueError:
            ok = False
        if not ok:
            return ApiError(
                403,
                f"requests from pages of {origin!r} are refused",
                code="origin-not-allowed",
                hint="use the page this server serves; to allow another site, launch with "
                     "--allowed-host NAME[:PORT] for its host",
            )
        return None

    def _check_declared_size(self, scope: Scope) -> ApiError | None:
        declared = _header(scope, b"content-length")
        if declared is None:
            return None
        limit = self.limits.for_path(scope.get("path", ""))
        try:
            size = int(declared)
        except ValueError:
            return ApiError(400, f"invalid Content-Length {declared!r}", code="invalid-request")
        return _too_large(scope, limit, size) if size > limit else None

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limits.for_path(scope.get("path", ""))
        seen = 0
        over = False
        started = False
        declared = _header(scope, b"content-length")
        body_done = _header(scope, b"transfer-encoding") is None and declared in (None, "0")

        async def counting_receive() -> Message:
            nonlocal seen, over, body_done
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if seen > limit:
                    # The app sees a client that went away and stops reading;
                    # nothing past the limit is buffered anywhere.
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            if over:
                return  # the app's answer to the "disconnect"; the 413 goes instead
            if message["type"] == "http.response.start":
                started = True
                if not body_done:
                    # Answered before the body ended (a refused upload): close
                    # rather than let the server read and drop the rest of it.
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except Exception:
            if not over:
                raise
            log.debug("the app stopped reading a body past its limit", exc_info=True)
        if over and not started:
            await _answer(send, _too_large(scope, limit, None))


def _too_large(scope: Scope, limit: int, size: int | None) -> ApiError:
    what = f"{size} bytes" if size is not None else "more than that"
    return ApiError(
        413,
        f"the request body is {what}; {scope.get('method', 'POST')} {scope.get('path', '')} takes at most {_human(limit)}",
        code="request-too-large",
        hint="send a smaller body (shorter conversation, smaller image); the chat limit is set with --max-body-mib",
        limit=limit,
    )


async def _answer(send: Send, exc: QwenhomeError) -> None:
    status = exc.status if isinstance(exc, ApiError) else 400
    body = json.dumps(error_body(exc, status)).encode()
    # Connection: close, since a refused body may still be on its way.
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
