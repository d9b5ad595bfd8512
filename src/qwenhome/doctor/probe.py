"""One host, step by step: DNS, TCP (IPv4 and IPv6), proxy tunnel, TLS, HTTP.

The steps live in ``*_step.py``; this module chains them into a route and
sends the HTTP requests. Each step is bounded by its own time-out cut to the run's deadline, and turns
the exception it meets into a :class:`Check` with a stable code, the cause in
plain words and the fix. The first request to a host records the DNS, TCP and
TLS checks; later requests reuse the resolved route.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..net.steps import exchange
from .background import Pending
from .context import USER_AGENT, Context, Response, StepFailed, Target
from .dns_step import resolve
from .dnscheck import Address
from .model import Check, failed, passed, skipped
from .proxy import Proxy
from .tcp_step import connect
from .tls_step import tls_handshake
from .tunnel_step import proxy_auth, tunnel

# -- HTTP --------------------------------------------------------------------
MAX_BODY = 8 << 20


def http_request(ctx: Context, sock: socket.socket, target: Target, method: str, path: str,
                 check_id: str, absolute: bool = False, proxy: Proxy | None = None,
                 extra_headers: Mapping[str, str] | None = None) -> Response:
    timeout = ctx.deadline.bound(ctx.opts.timeouts.read)
    sock.settimeout(timeout)
    url = f"{target.scheme}://{target.netloc}{path}" if absolute else path
    headers = {"Host": target.netloc, "User-Agent": USER_AGENT, "Accept-Encoding": "identity",
               "Accept": "application/json"}
    if absolute and proxy is not None:
        headers.update(proxy_auth(proxy))
    headers.update(extra_headers or {})
    try:
        status, reason, msg, body = exchange(sock, method, url, headers, body_limit=MAX_BODY)
        return Response(status, reason, msg, body)
    except TimeoutError:
        raise StepFailed(failed(
            check_id, "response-timeout",
            f"{target.host} accepted the connection but did not answer {method} {path.split('?')[0]} "
            f"within {timeout:.1f} s",
            "the server or something on the path hangs: try again later, try another source "
            "(`qwenhome doctor --fix` puts a reachable one first), or check the proxy/firewall",
            target.host,
        )) from None
    except http.client.RemoteDisconnected as exc:  # a BadStatusLine, but means "closed"
        raise StepFailed(failed(
            check_id, "connection-dropped",
            f"{target.host} closed the connection without answering {method} ({exc})",
            "try again; if it persists a firewall or proxy is cutting the connection", target.host,
        )) from None
    except (http.client.BadStatusLine, http.client.LineTooLong) as exc:
        raise StepFailed(failed(
            check_id, "not-a-hub", f"{target.host} did not answer HTTP ({exc!r})",
            f"check the URL and port in {target.origin}", target.host,
        )) from None
    except (OSError, http.client.HTTPException) as exc:
        raise StepFailed(failed(
            check_id, "connection-dropped",
            f"{target.host} closed the connection without answering {method} ({exc!r})",
            "try again; if it persists a firewall or proxy is cutting the connection", target.host,
        )) from None


def _ignore(check: Check) -> None:
    pass


@dataclass
class HostProbe:
    """The route to one host, learned by the first request."""

    ctx: Context
    target: Target
    proxy: Proxy | None
    proxy_check: Pending[Check] | None = None
    checks: list[Check] = field(default_factory=list)
    addrs: list[Address] | None = None
    failed_route: bool = False

    def _open(self) -> socket.socket:
        t = self.target
        first = self.addrs is None
        sock = self._raw(self.checks.append if first else _ignore)
        if t.scheme == "https":
            tls, check = tls_handshake(self.ctx, sock, t, f"tls:{t.host}", lambda: self._raw(_ignore))
            if first:
                self.checks.append(check)
            return tls
        return sock

    def _raw(self, record: Callable[[Check], None]) -> socket.socket:
        """A connected socket to the host (through the proxy's tunnel if any), before TLS."""
        t, ctx = self.target, self.ctx
        first = self.addrs is None
        if self.proxy is not None:
            proxy = self.proxy
            if self.proxy_check is not None:
                try:
                    ok = self.proxy_check.result(ctx.deadline.remaining() + 0.1).status == "pass"
                except TimeoutError:
                    ok = False
                if not ok:
                    raise StepFailed(skipped(f"route:{t.host}", f"{t.host} goes through the proxy "
                                             f"{proxy.display}, which is unreachable", t.host))
            if first:
                record(skipped(f"dns:{t.host}", f"{t.host} is resolved by the proxy {proxy.display}", t.host))
            addrs, _ = resolve(ctx, proxy.host, proxy.port, "the proxy variable", f"dns:{proxy.host}")
            self.addrs = addrs
            sock, _ = connect(ctx, proxy.host, addrs, proxy.port, "the proxy variable",
                              f"tcp:{proxy.host}:{proxy.port}", "proxy")
            if t.scheme == "https":
                try:
                    record(tunnel(ctx, sock, proxy, t, f"tunnel:{t.host}"))
                except StepFailed:
                    sock.close()
                    raise
        else:
            if first:
                addrs, check = resolve(ctx, t.host, t.port, t.origin, f"dns:{t.host}")
                record(check)
                self.addrs = addrs
            assert self.addrs is not None
            sock, checks = connect(ctx, t.host, self.addrs, t.port, t.origin, f"tcp:{t.host}:{t.port}")
            for c in checks:
                record(c)
        return sock

    def request(self, method: str, path: str, check_id: str,
                headers: Mapping[str, str] | None = None) -> Response:
        """One bounded request; raises StepFailed (with the failing check)."""
        if self.failed_route:
            raise StepFailed(skipped(check_id, f"{self.target.host} is not reachable", self.target.host))
        if self.ctx.deadline.expired:
            raise StepFailed(failed(
                check_id, "response-timeout",
                f"{self.target.host} was not reached before the doctor's deadline "
                f"({self.ctx.opts.timeouts.total:.0f} s)",
                "the network is very slow or hangs: run the doctor again, then check the proxy/firewall",
                self.target.host,
            ))
        try:
            sock = self._open()
        except StepFailed as exc:
            if self.addrs is None or not self.checks or self.checks[-1] is not exc.check:
                self.checks.append(exc.check)
            self.failed_route = True
            why = f"{exc.check.code} at {exc.check.id}" if exc.check.code else exc.check.summary
            raise StepFailed(skipped(check_id, f"not tried: {self.target.host} is not reachable ({why})",
                                     self.target.host)) from None
        absolute = self.proxy is not None and self.target.scheme == "http"
        return http_request(self.ctx, sock, self.target, method, path, check_id, absolute, self.proxy, headers)


def probe_proxy(ctx: Context, proxy: Proxy) -> Check:
    """Can the proxy be reached at all? One check per distinct proxy."""
    vars_ = " ".join(proxy.variables) or "the proxy variables"
    check_id = f"proxy:{proxy.host}:{proxy.port}"
    fix = (f"start the proxy or correct {vars_}; if this network needs no proxy: "
           f"`unset {' '.join(proxy.variables) or 'HTTPS_PROXY HTTP_PROXY'}`")
    try:
        addrs, _ = resolve(ctx, proxy.host, proxy.port, vars_, check_id)
        sock, _ = connect(ctx, proxy.host, addrs, proxy.port, vars_, check_id, "proxy")
    except StepFailed as exc:
        return failed(
            check_id, "proxy-connection-failed",
            f"the proxy {proxy.display} (from {vars_}) is unreachable: {exc.check.summary}",
            fix, proxy.host, proxy=proxy.display, cause=exc.check.code or "",
        )
    sock.close()
    return passed(check_id, f"the proxy {proxy.display} (from {vars_}) accepts connections", proxy.host,
                  proxy=proxy.display)
