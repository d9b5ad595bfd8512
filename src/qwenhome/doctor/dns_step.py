"""The DNS step: resolve through the system resolver and, when it fails, ask
the direct resolvers whose fault it is."""

from __future__ import annotations

import logging
import socket
import time
from functools import partial

from .background import Pending
from .context import Context, StepFailed
from .dnscheck import KIND_WORDS, Address, DirectAnswer, DnsFailure, is_ip, query_direct
from .model import Check, failed, passed

log = logging.getLogger(__name__)

# The system resolver gets this long alone before the direct resolvers are asked too.
DIRECT_AFTER = 0.5


def _ask_directs(ctx: Context, host: str) -> tuple[list[Pending[DirectAnswer]], float]:
    bound = ctx.deadline.bound(ctx.opts.timeouts.dns)
    pendings = [Pending(partial(query_direct, host, s, bound), name=f"dns {host} @{s}")
                for s in ctx.opts.resolvers]
    return pendings, time.monotonic() + bound + 0.1


def resolve(ctx: Context, host: str, port: int, origin: str, check_id: str) -> tuple[list[Address], Check]:
    """Resolve through the system resolver; when it fails (or is slow), ask
    the direct resolvers to say whose fault it is. A healthy lookup sends
    nothing to them."""
    if is_ip(host):
        ip = host.strip("[]")
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        return [(family, ip)], passed(check_id, f"{host} is an IP address; no DNS lookup", host)
    step = ctx.opts.timeouts.dns
    bound = ctx.deadline.bound(step)
    system = _system_label(ctx)
    lookup: Pending[list[Address]] = Pending(partial(ctx.resolver, host, port, bound), name=f"dns {host}")
    directs: list[Pending[DirectAnswer]] = []
    directs_end = 0.0
    if not lookup.wait(min(DIRECT_AFTER, bound)):
        directs, directs_end = _ask_directs(ctx, host)
    try:
        addrs = lookup.result(bound + 0.2)
    except Exception as exc:  # DnsFailure, TimeoutError, or a resolver's own bug
        if isinstance(exc, DnsFailure):
            failure = exc
        elif isinstance(exc, TimeoutError):
            failure = DnsFailure("timeout", f"no answer in {bound:.1f} s")
        else:
            failure = DnsFailure("error", repr(exc))
        if not directs:
            directs, directs_end = _ask_directs(ctx, host)
        answers = []
        for pending in directs:
            try:
                answers.append(pending.result(max(0.0, directs_end - time.monotonic())))
            except TimeoutError:
                log.debug("a direct DNS query about %s did not answer in time", host)
        raise StepFailed(_dns_failure(check_id, host, origin, system, failure, answers)) from None
    if not addrs:
        raise StepFailed(failed(
            check_id, "dns-resolution-failed", f"the {system} returned no address for {host}",
            f"check the host name {host} ({origin})", host, resolver=system,
        ))
    shown = ", ".join(ip for _, ip in addrs[:4])
    return addrs, passed(check_id, f"{host} resolves to {shown}", host, resolver=system)


# Names that certainly exist: an NXDOMAIN for them means filtered DNS, not a typo.
PUBLIC_DOMAINS = ("huggingface.co", "hf.co", "modelscope.cn", "modelscope.ai", "hf-mirror.com")


def is_well_known(host: str) -> bool:
    """``host`` is one of :data:`PUBLIC_DOMAINS` or under one."""
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
    if (nx or exc.kind == "nxdomain") and is_well_known(host):
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
    tried = ", ".join(f"resolver {a.server} {KIND_WORDS.get(a.kind, 'failed')}" for a in answers)
    return failed(
        check_id, "dns-resolution-failed",
        f"no resolver answered for {host}: the {system} {said}"
        f"{'; ' + tried if tried else ''}; DNS is blocked or the machine is offline",
        "check the network connection; if your network only allows a proxy, set HTTPS_PROXY; "
        "otherwise ask the network administrator which DNS server to use",
        host, resolver=system, failure=exc.kind,
    )
