"""One host, step by step: DNS, TCP (IPv4 and IPv6), proxy tunnel, TLS, HTTP.

Each step is bounded by its own time-out cut to the run's deadline, and turns
the exception it meets into a :class:`Check` with a stable code, the cause in
plain words and the fix. The first request to a host records the DNS, TCP and
TLS checks; later requests reuse the resolved route.
"""

from __future__ import annotations

import base64
import errno
import http.client
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from functools import partial
from urllib.parse import urlsplit

from .. import __version__
from .background import Pending
from .dnscheck import (
    KIND_WORDS,
    Address,
    DirectAnswer,
    DnsFailure,
    SystemResolver,
    is_ip,
    query_direct,
)
from .model import Check, failed, passed, skipped, warned
from .options import Deadline, DoctorOptions
from .proxy import Proxy
from .x509 import issuer_and_subject

USER_AGENT = f"qwenhome-doctor/{__version__}"
MAX_BODY = 8 << 20
# Names that certainly exist: an NXDOMAIN for them means filtered DNS, not a typo.
PUBLIC_DOMAINS = ("huggingface.co", "hf.co", "modelscope.cn", "modelscope.ai", "hf-mirror.com")


class StepFailed(Exception):
    """A step ended the chain; ``check`` says why."""

    def __init__(self, check: Check) -> None:
        super().__init__(check.summary)
        self.check = check


@dataclass(frozen=True)
class Target:
    """A host a pull would touch. ``origin`` says where it came from, for fixes."""

    scheme: str
    host: str
    port: int
    origin: str

    @classmethod
    def of(cls, url: str, origin: str) -> Target:
        parts = urlsplit(url)
        scheme = parts.scheme or "https"
        port = parts.port or (443 if scheme == "https" else 80)
        return cls(scheme, (parts.hostname or "").lower(), port, origin)

    @property
    def netloc(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


@dataclass
class Response:
    status: int
    reason: str
    headers: Message
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass
class Context:
    """What every host chain shares."""

    opts: DoctorOptions
    deadline: Deadline
    resolver: SystemResolver
    system_nameservers: list[str]
    ssl_context: ssl.SSLContext
    env: Mapping[str, str]


def _family_name(family: int) -> str:
    return "IPv6" if family == socket.AF_INET6 else "IPv4"


# -- DNS ---------------------------------------------------------------------
def resolve(ctx: Context, host: str, port: int, origin: str, check_id: str) -> tuple[list[Address], Check]:
    """Resolve through the system resolver; on failure, ask the direct
    resolvers (started at the same time) to say whose fault it is."""
    if is_ip(host):
        ip = host.strip("[]")
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        return [(family, ip)], passed(check_id, f"{host} is an IP address; no DNS lookup", host)
    t = ctx.opts.timeouts
    bound = ctx.deadline.bound(t.dns)
    directs = [
        Pending(partial(query_direct, host, s, bound), name=f"dns {host} @{s}") for s in ctx.opts.resolvers
    ]
    system = _system_label(ctx)
    try:
        addrs = ctx.resolver(host, port, bound)
    except DnsFailure as exc:
        answers = []
        for pending in directs:
            try:
                answers.append(pending.result(ctx.deadline.bound(t.dns)))
            except TimeoutError:
                pass
        raise StepFailed(_dns_failure(check_id, host, origin, system, exc, answers)) from None
    if not addrs:
        raise StepFailed(failed(
            check_id, "dns-resolution-failed", f"the {system} returned no address for {host}",
            f"check the host name {host} ({origin})", host, resolver=system,
        ))
    shown = ", ".join(ip for _, ip in addrs[:4])
    return addrs, passed(check_id, f"{host} resolves to {shown}", host, resolver=system)


def _is_public(host: str) -> bool:
    return any(host == h or host.endswith("." + h) for h in PUBLIC_DOMAINS)


def _system_label(ctx: Context) -> str:
    if ctx.system_nameservers:
        ns = ", ".join(ctx.system_nameservers)
        return f"system resolver (nameserver {ns} in {ctx.opts.resolv_conf})"
    return "system resolver"


def _dns_failure(
    check_id: str, host: str, origin: str, system: str, exc: DnsFailure, answers: list[DirectAnswer],
) -> Check:
    said = KIND_WORDS.get(exc.kind, "failed")
    good = [a for a in answers if a.kind == "answer"]
    nx = [a for a in answers if a.kind == "nxdomain"]
    if good:
        other = good[0]
        return failed(
            check_id, "dns-resolution-failed",
            f"your resolver is broken: the {system} {said} for {host}, "
            f"but resolver {other.server} resolves it to {', '.join(other.ips[:3])}",
            f"point the system at a working resolver: put `nameserver {other.server.split(':')[0]}` "
            f"in /etc/resolv.conf (as root) or fix the DNS setting of your network/VPN",
            host, resolver=system, failure=exc.kind, working_resolver=other.server,
        )
    if (nx or exc.kind == "nxdomain") and _is_public(host):
        who = f"resolver {nx[0].server}" if nx else f"the {system}"
        return failed(
            check_id, "dns-resolution-failed",
            f"{who} says {host} does not exist, but it is a public host: DNS on this network is "
            "filtered or hijacked",
            "use a resolver that is not filtered (ask the network administrator), or a mirror that "
            "this network allows: `export HF_ENDPOINT=https://<mirror>`",
            host, resolver=system, failure="nxdomain",
        )
    if nx or exc.kind == "nxdomain":
        who = f"resolver {nx[0].server}" if nx else f"the {system}"
        return failed(
            check_id, "dns-resolution-failed",
            f"the name {host} does not exist ({who} says NXDOMAIN)",
            f"check the spelling of the host name {host} in {origin}",
            host, resolver=system, failure="nxdomain",
        )
    tried = ", ".join(f"{a.server} {KIND_WORDS.get(a.kind, 'failed')}" for a in answers)
    return failed(
        check_id, "dns-resolution-failed",
        f"no resolver answered for {host}: the {system} {said}"
        f"{'; ' + tried if tried else ''}; DNS is blocked or the machine is offline",
        "check the network connection; if your network only allows a proxy, set HTTPS_PROXY; "
        "otherwise ask the network administrator which DNS server to use",
        host, resolver=system, failure=exc.kind,
    )


# -- TCP ---------------------------------------------------------------------
def _connect(ip: str, family: int, port: int, timeout: float) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((ip, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _connect_failure(check_id: str, what: str, host: str, ip: str, port: int, exc: BaseException,
                     timeout: float, origin: str) -> Check:
    who = f"{what} {host}".strip() + (f" ({ip})" if ip != host else "")
    if isinstance(exc, ConnectionRefusedError):
        return failed(
            check_id, "connection-refused",
            f"{who} refused the connection on port {port}: nothing listens there "
            "or a firewall rejects it",
            f"check the port in {origin}; start the server if it is yours, or allow outbound TCP "
            f"port {port} to {host} in the firewall",
            host, address=f"{ip}:{port}",
        )
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return failed(
            check_id, "connection-timeout",
            f"no answer to a TCP connect to {who} on port {port} within {timeout:.1f} s: "
            "packets are dropped by a firewall, or the host is down",
            f"allow outbound TCP port {port} to {host} in the firewall, or set HTTPS_PROXY if "
            "your network only allows a proxy",
            host, address=f"{ip}:{port}",
        )
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else repr(exc)
    code = "connection-timeout" if isinstance(exc, OSError) and exc.errno in (
        errno.ENETUNREACH, errno.EHOSTUNREACH) else "connection-failed"
    return failed(
        check_id, code, f"cannot connect to {who} on port {port}: {reason}",
        "check the network connection and routes (`ip route`); a VPN may be needed or misconfigured",
        host, address=f"{ip}:{port}",
    )


def connect(ctx: Context, target_host: str, addrs: list[Address], port: int, origin: str,
            check_id: str, what: str = "") -> tuple[socket.socket, list[Check]]:
    """Connect to the first IPv4 and first IPv6 address at once; report IPv6
    that resolves but does not connect while IPv4 does."""
    timeout = ctx.deadline.bound(ctx.opts.timeouts.connect)
    firsts: list[Address] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        first = next((a for a in addrs if a[0] == family), None)
        if first:
            firsts.append(first)
    firsts.sort(key=lambda a: addrs.index(a))  # the order the system resolver chose
    pendings = [Pending(partial(_connect, a[1], a[0], port, timeout), name=f"tcp {a[1]}") for a in firsts]
    socks: dict[Address, socket.socket] = {}
    errors: dict[Address, BaseException] = {}
    for addr, pending in zip(firsts, pendings, strict=True):
        try:
            socks[addr] = pending.result(timeout + 0.2)
        except (OSError, TimeoutError) as exc:
            errors[addr] = exc
    if not socks:
        addr = firsts[0]
        raise StepFailed(_connect_failure(check_id, what, target_host, addr[1], port, errors[addr], timeout, origin))
    chosen = next(a for a in firsts if a in socks)
    for addr, sock in socks.items():
        if addr != chosen:
            sock.close()
    checks = [passed(check_id, f"TCP connect to {what + ' ' if what else ''}{chosen[1]}:{port} works",
                     target_host, address=f"{chosen[1]}:{port}")]
    v6 = next((a for a in firsts if a[0] == socket.AF_INET6), None)
    if v6 is not None and v6 in errors and any(a[0] == socket.AF_INET for a in socks):
        v6_error = errors[v6]
        reason = ("timed out" if isinstance(v6_error, TimeoutError)
                  else getattr(v6_error, "strerror", None) or repr(v6_error))
        checks.append(warned(
            f"ipv6:{target_host}", "ipv6-unreachable",
            f"{target_host} has an IPv6 address ({v6[1]}) that does not connect ({reason}) while IPv4 "
            "works; programs that try IPv6 first wait for a time-out on every connection",
            "prefer IPv4 for this machine: add `precedence ::ffff:0:0/96 100` to /etc/gai.conf (as root), "
            "or fix IPv6 routing; to turn IPv6 off: `sudo sysctl -w net.ipv6.conf.all.disable_ipv6=1`",
            target_host, address=v6[1],
        ))
    return socks[chosen], checks


# -- proxy tunnel ------------------------------------------------------------
def _proxy_auth(proxy: Proxy) -> dict[str, str]:
    if not proxy.auth:
        return {}
    raw = f"{proxy.auth[0]}:{proxy.auth[1]}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > 65536:
            break
    return data


def tunnel(ctx: Context, sock: socket.socket, proxy: Proxy, target: Target, check_id: str) -> Check:
    """CONNECT through the proxy; raises StepFailed with the proxy named."""
    sock.settimeout(ctx.deadline.bound(ctx.opts.timeouts.read))
    lines = [f"CONNECT {target.host}:{target.port} HTTP/1.1", f"Host: {target.host}:{target.port}",
             f"User-Agent: {USER_AGENT}"]
    lines += [f"{k}: {v}" for k, v in _proxy_auth(proxy).items()]
    vars_ = " ".join(proxy.variables) or "HTTPS_PROXY"
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = _read_head(sock)
    except TimeoutError:
        raise StepFailed(failed(
            check_id, "response-timeout",
            f"the proxy {proxy.display} accepted the connection but did not answer CONNECT "
            f"{target.host}:{target.port}",
            f"check the proxy: restart it, or correct/unset {vars_}", target.host, proxy=proxy.display,
        )) from None
    except OSError as exc:
        raise StepFailed(failed(
            check_id, "proxy-connection-failed",
            f"the proxy {proxy.display} dropped the CONNECT to {target.host}: {exc.strerror or exc!r}",
            f"check the proxy, or correct/unset {vars_}", target.host, proxy=proxy.display,
        )) from None
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    parts = status_line.split()
    if len(parts) < 2 or parts[1] != "200":
        hint = (" (it wants credentials: put them in the proxy URL, http://user:pass@host:port)"
                if len(parts) > 1 and parts[1] == "407" else "")
        raise StepFailed(failed(
            check_id, "proxy-connection-failed",
            f"the proxy {proxy.display} refused CONNECT {target.host}:{target.port}: "
            f"{status_line or 'no answer'}{hint}",
            f"allow {target.host} on the proxy, add it to NO_PROXY if it is reachable directly, "
            f"or correct {vars_}", target.host, proxy=proxy.display,
        ))
    return passed(check_id, f"the proxy {proxy.display} tunnels to {target.host}:{target.port}",
                  target.host, proxy=proxy.display)


# -- TLS ---------------------------------------------------------------------
def _peer_certificate(reopen: Callable[[], socket.socket], host: str) -> bytes | None:
    """Fetch the certificate again without verifying it, to show who issued it."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with reopen() as raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
            return tls.getpeercert(binary_form=True)
    except (OSError, ValueError, StepFailed):
        return None


def tls_handshake(ctx: Context, sock: socket.socket, target: Target, check_id: str,
                  reopen: Callable[[], socket.socket]) -> tuple[ssl.SSLSocket, Check]:
    """Verify the certificate; ``reopen`` gives a fresh raw connection on the
    same route, used only to fetch the untrusted certificate for the report."""
    timeout = ctx.deadline.bound(ctx.opts.timeouts.read)
    sock.settimeout(timeout)
    try:
        tls = ctx.ssl_context.wrap_socket(sock, server_hostname=target.host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        der = _peer_certificate(reopen, target.host)
        issuer, subject = issuer_and_subject(der) if der else ("?", "?")
        reason = exc.verify_message or str(exc)
        clock = (" The certificate's dates do not match the local clock: check the time (`date`)."
                 if "expired" in reason or "not yet valid" in reason else "")
        raise StepFailed(failed(
            check_id, "tls-verification-failed",
            f"the certificate of {target.host} is not trusted ({reason}); subject: {subject}; "
            f"issuer: {issuer}. An issuer other than the site's public CA means a proxy or "
            f"antivirus is intercepting TLS.{clock}",
            f"if '{issuer}' is your organisation's proxy, trust its CA: "
            "`export SSL_CERT_FILE=/path/to/proxy-ca.pem` (and REQUESTS_CA_BUNDLE for other tools); "
            "otherwise use another network",
            target.host, issuer=issuer, subject=subject, reason=reason,
        )) from None
    except TimeoutError:
        sock.close()
        raise StepFailed(failed(
            check_id, "response-timeout",
            f"{target.host} accepted the TCP connection but did not complete the TLS handshake "
            f"within {timeout:.1f} s: something on the path swallows the traffic",
            "a firewall or dead proxy is in the way: try another network, or set HTTPS_PROXY to the "
            "proxy your network requires",
            target.host,
        )) from None
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError) as exc:
        sock.close()
        raise StepFailed(failed(
            check_id, "connection-dropped",
            f"{target.host} closed the connection during the TLS handshake ({exc!r}): often a "
            "firewall that blocks by server name, or a proxy that is required but not set",
            "try another network, or set HTTPS_PROXY to your network's proxy; ask the network "
            f"administrator whether {target.host} is blocked",
            target.host,
        )) from None
    except ssl.SSLError as exc:
        sock.close()
        reason = exc.reason or str(exc)
        plain = " (the server speaks plain HTTP: use http:// in the URL)" if "WRONG_VERSION" in str(reason) else ""
        raise StepFailed(failed(
            check_id, "tls-handshake-failed",
            f"TLS with {target.host} failed: {reason}{plain}",
            f"check the URL's scheme and port in {target.origin}; an old TLS-intercepting middlebox "
            "can also cause this",
            target.host, reason=str(reason),
        )) from None
    except OSError as exc:
        sock.close()
        raise StepFailed(failed(
            check_id, "connection-dropped",
            f"{target.host} dropped the connection during the TLS handshake "
            f"({exc.strerror or exc!r}): often a firewall that blocks by server name",
            "try another network or a proxy (HTTPS_PROXY); ask the network administrator whether "
            f"{target.host} is blocked",
            target.host,
        )) from None
    return tls, passed(check_id, f"TLS certificate of {target.host} verified ({tls.version()})", target.host)


# -- HTTP --------------------------------------------------------------------
def http_request(ctx: Context, sock: socket.socket, target: Target, method: str, path: str,
                 check_id: str, absolute: bool = False, proxy: Proxy | None = None,
                 extra_headers: Mapping[str, str] | None = None) -> Response:
    timeout = ctx.deadline.bound(ctx.opts.timeouts.read)
    sock.settimeout(timeout)
    conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    conn.sock = sock
    url = f"{target.scheme}://{target.netloc}{path}" if absolute else path
    headers = {"Host": target.netloc, "User-Agent": USER_AGENT, "Accept-Encoding": "identity",
               "Accept": "application/json"}
    if absolute and proxy is not None:
        headers.update(_proxy_auth(proxy))
    headers.update(extra_headers or {})
    try:
        conn.request(method, url, headers=headers)
        resp = conn.getresponse()
        body = b"" if method == "HEAD" else resp.read(MAX_BODY)
        return Response(resp.status, resp.reason, resp.msg, body)
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
    finally:
        conn.close()


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
