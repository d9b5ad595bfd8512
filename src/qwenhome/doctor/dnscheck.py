"""DNS: the system resolver, and direct queries that tell "your resolver is
broken" apart from "the name does not exist".

A *system resolver* is any callable ``(host, port, timeout) -> [(family, ip)]``
that raises :class:`DnsFailure`; the default wraps ``getaddrinfo``. Direct
queries use dnspython (the ``doctor`` extra); without it they are skipped.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..net.steps import resolve
from .background import Pending

log = logging.getLogger(__name__)

Address = tuple[int, str]  # (socket family, ip)
SystemResolver = Callable[[str, int, float], list[Address]]

# Kinds of DNS failure, in plain words for summaries.
KIND_WORDS = {
    "nxdomain": "says the name does not exist",
    "timeout": "did not answer",
    "temporary": "failed temporarily (resolver unreachable)",
    "no-address": "has no address for the name",
    "servfail": "answered SERVFAIL",
    "unreachable": "is unreachable",
    "error": "failed",
    "unavailable": "was not asked (install the doctor extra, dnspython, to ask other resolvers)",
}


class DnsFailure(Exception):
    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _gai_kind(exc: socket.gaierror) -> str:
    if exc.errno == socket.EAI_NONAME:
        return "nxdomain"
    if exc.errno == socket.EAI_AGAIN:
        return "temporary"
    if exc.errno == getattr(socket, "EAI_NODATA", object()):
        return "no-address"
    if exc.errno == socket.EAI_FAIL:
        return "servfail"
    return "error"


def getaddrinfo_resolver(host: str, port: int, timeout: float) -> list[Address]:
    """The system resolver, bounded: getaddrinfo cannot be interrupted, so it
    runs in a daemon thread that is abandoned on time-out."""

    def lookup() -> list[Address]:
        out: list[Address] = []
        for family, sockaddr in resolve(host, port):
            item = (int(family), str(sockaddr[0]))
            if item not in out:
                out.append(item)
        return out

    try:
        return Pending(lookup, name=f"getaddrinfo {host}").result(timeout)
    except TimeoutError:
        raise DnsFailure("timeout", f"no answer in {timeout:.1f} s") from None
    except socket.gaierror as exc:
        raise DnsFailure(_gai_kind(exc), str(exc.strerror or exc)) from None
    except OSError as exc:
        raise DnsFailure("error", str(exc)) from None


def parse_server(spec: str) -> tuple[str, int]:
    """``"1.1.1.1"``, ``"127.0.0.1:5353"`` or ``"[::1]:53"`` -> (ip, port)."""
    if spec.startswith("["):
        ip, _, rest = spec[1:].partition("]")
        return ip, int(rest[1:]) if rest.startswith(":") else 53
    if spec.count(":") == 1:
        ip, _, port = spec.partition(":")
        return ip, int(port)
    return spec, 53


@dataclass(frozen=True)
class DirectAnswer:
    server: str
    kind: str  # "answer" or a failure kind
    ips: tuple[str, ...] = ()


def query_direct(name: str, server: str, timeout: float, rdtypes: Sequence[str] = ("A", "AAAA")) -> DirectAnswer:
    """Ask one resolver directly over UDP, A then AAAA, within ``timeout`` in total."""
    try:
        import dns.exception
        import dns.flags
        import dns.message
        import dns.query
        import dns.rcode
        import dns.rdatatype
    except ImportError:  # the doctor extra is not installed
        return DirectAnswer(server, "unavailable")
    ip, port = parse_server(server)
    ips: list[str] = []
    kind = "no-address"
    per_type = timeout / max(1, len(rdtypes))
    for rdtype in rdtypes:
        query = dns.message.make_query(name, rdtype)
        try:
            response = dns.query.udp(query, ip, timeout=per_type, port=port)
        except dns.exception.Timeout:
            return DirectAnswer(server, "timeout", tuple(ips)) if not ips else DirectAnswer(server, "answer", tuple(ips))
        except OSError as exc:
            log.debug("DNS server %s unreachable: %s", server, exc)
            return DirectAnswer(server, "unreachable")
        except dns.exception.DNSException as exc:
            log.debug("DNS server %s: %r", server, exc)
            return DirectAnswer(server, "error")
        rcode = response.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            return DirectAnswer(server, "nxdomain")
        if rcode != dns.rcode.NOERROR:
            kind = "servfail"
            continue
        for rrset in response.answer:
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                ips.extend(r.to_text() for r in rrset)
    return DirectAnswer(server, "answer", tuple(ips)) if ips else DirectAnswer(server, kind)


def nameserver_resolver(servers: Sequence[str]) -> SystemResolver:
    """A system-resolver stand-in that asks ``servers`` in order (as libc
    would with these nameservers in resolv.conf)."""

    def resolve(host: str, port: int, timeout: float) -> list[Address]:
        if is_ip(host):
            ip = host.strip("[]")
            return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)]
        last = DirectAnswer("", "timeout")
        per_server = timeout / max(1, len(servers))
        for server in servers:
            last = query_direct(host, server, per_server)
            if last.kind == "answer":
                return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip) for ip in last.ips]
            if last.kind == "nxdomain":
                break
        raise DnsFailure(last.kind, f"from {last.server}" if last.server else "")

    return resolve


def read_nameservers(resolv_conf: Path) -> list[str]:
    try:
        text = resolv_conf.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        log.debug("%s not read: %s", resolv_conf, exc)
        return []
    out = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            out.append(parts[1])
    return out
