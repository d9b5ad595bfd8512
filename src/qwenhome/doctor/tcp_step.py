"""The TCP step: connect to the first IPv4 and IPv6 addresses at once, and
report IPv6 that resolves but does not connect."""

from __future__ import annotations

import errno
import socket
from functools import partial

from ..net.steps import connect_tcp
from .background import Pending
from .context import Context, StepFailed
from .dnscheck import Address
from .model import Check, failed, passed, warned


# -- TCP ---------------------------------------------------------------------
def _connect(ip: str, family: int, port: int, timeout: float) -> socket.socket:
    return connect_tcp((family, (ip, port)), timeout)


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
