"""``run_doctor``: every check, concurrently, within one deadline; then the
checks that need their results (disk, offline flag, proxy bypass); then, with
``fix=True``, the safe fixes."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar
from urllib.parse import urlsplit

from ..config import Settings, Source, ca_bundle
from ..errors import ConfigError
from ..net import tls
from .background import Pending
from .context import Context, StepFailed, Target
from .dnscheck import getaddrinfo_resolver, read_nameservers
from .fixes import reorder_sources, write_env_sh
from .home import (
    check_cache_env,
    check_disk,
    check_hf_transfer,
    check_offline_flag,
    check_other_caches,
)
from .model import Check, DoctorReport, FixApplied, failed, passed, skipped, warned
from .options import DEFAULT_REPO, HF_HOSTS, Deadline, DoctorOptions
from .probe import HostProbe, probe_proxy
from .proxy import Proxy, bypassed, no_proxy_value, proxy_for
from .sources import RepoSize, SourceResult, check_source
from .wsl import check_wsl, check_wsl_home
from .xet import check_xet

log = logging.getLogger(__name__)

T = TypeVar("T")

# Time past the deadline that a finished-but-not-yet-returned thread is given.
GRACE = 0.3


class _Claims:
    """Each host is probed once, by whichever chain reaches it first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str, int]] = set()

    def claim(self, t: Target) -> bool:
        key = (t.scheme, t.host, t.port)
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
            return True


def _origin(settings: Settings, source: Source) -> str:
    endpoint = (settings.env.get("HF_ENDPOINT") or "").rstrip("/")
    if endpoint and endpoint == source.url.rstrip("/"):
        return f"HF_ENDPOINT ({source.url})"
    return f"source '{source.name}' ({source.url}; config {settings.config_file} or --source)"


def _is_hf_host(host: str) -> bool:
    return any(host == h or host.endswith("." + h) for h in HF_HOSTS)


def _ssl_context(settings: Settings, opts: DoctorOptions) -> tuple[ssl.SSLContext, Check | None]:
    """The context a pull would use (the same CA bundle), or the doctor's own
    ``ca_file``; with a failed check when that bundle cannot be loaded (the
    hosts are then checked with the system's certificates)."""
    ca = (str(opts.ca_file), "the doctor's ca_file") if opts.ca_file else ca_bundle(settings.env)
    try:
        return tls.ssl_context(ca), None
    except ConfigError as exc:
        return tls.ssl_context(), failed("ca-bundle", exc.code, exc.message, exc.hint, path=ca[0] if ca else "")


class _Run:
    def __init__(self, settings: Settings, opts: DoctorOptions, repos: list[str], repos_chosen: bool) -> None:
        self.settings = settings
        self.opts = opts
        self.repos = repos
        self.repos_chosen = repos_chosen  # False when the default repository stands in
        self.deadline = Deadline(opts.timeouts.total)
        context, self.ca_check = _ssl_context(settings, opts)
        self.ctx = Context(
            opts, self.deadline, opts.system_resolver or getaddrinfo_resolver,
            read_nameservers(opts.resolv_conf), context, settings.env,
        )
        self.claims = _Claims()
        self.proxies: dict[tuple[str, int], tuple[Proxy, Pending[Check]]] = {}
        self.targets: list[Target] = []
        self._lock = threading.Lock()

    def proxy_gate(self, target: Target) -> tuple[Proxy | None, Pending[Check] | None]:
        proxy = proxy_for(self.settings.env, target.scheme, target.host)
        with self._lock:
            self.targets.append(target)
            if proxy is None:
                return None, None
            key = (proxy.host, proxy.port)
            if key not in self.proxies:
                self.proxies[key] = (proxy, Pending(lambda: probe_proxy(self.ctx, proxy), name="proxy"))
            return proxy, self.proxies[key][1]

    def seen(self) -> tuple[list[Target], list[tuple[tuple[str, int], tuple[Proxy, Pending[Check]]]]]:
        """The targets met so far and the proxies they use, sorted."""
        with self._lock:
            return list(self.targets), sorted(self.proxies.items())

    def probe(self, target: Target) -> HostProbe:
        proxy, gate = self.proxy_gate(target)
        return HostProbe(self.ctx, target, proxy, gate)

    def plain_host(self, target: Target, path: str) -> list[Check]:
        """A host that only has to answer HTTP at all (CDN, Xet)."""
        probe = self.probe(target)
        check_id = f"http:{target.host}"
        try:
            resp = probe.request("HEAD", path or "/", check_id)
        except StepFailed as exc:
            return [*probe.checks, exc.check]
        return [*probe.checks, passed(check_id, f"{target.host} answers HTTP ({resp.status})", target.host)]

    def source_task(self, source: Source) -> tuple[list[Check], SourceResult]:
        target = Target.of(source.url, _origin(self.settings, source))
        self.claims.claim(target)
        probe = self.probe(target)
        result = check_source(self.ctx, probe, source, self.repos, self.repos_chosen)
        checks = [*probe.checks, *result.checks]
        for url in result.redirects:
            t = Target.of(url, f"a download redirect from {source.name}")
            if self.claims.claim(t):
                parts = urlsplit(url)
                checks += self.plain_host(t, parts.path + (f"?{parts.query}" if parts.query else ""))
        if result.xet is not None and self.settings.xet:
            checks += check_xet(source, result.xet, partial(self.xet_probe, probe))
        elif result.xet is not None:
            checks.append(skipped(f"xet:{source.name}", "Xet is turned off here (HF_HUB_DISABLE_XET, or xet = "
                                  "false under [pull]): pulls take the resolve bridge, its hosts were not checked",
                                  target.host))
        return checks, result

    def xet_probe(self, own: HostProbe, url: str, origin: str) -> tuple[HostProbe, bool]:
        """The probe for a Xet host, and whether its step checks are to be
        reported here (not when another chain met the host first)."""
        target = Target.of(url, origin)
        if (target.scheme, target.host, target.port) == (own.target.scheme, own.target.host, own.target.port):
            return own, False
        if self.claims.claim(target):
            return self.probe(target), True
        return self.probe(target), False

    def xet_task(self, host: str) -> list[Check]:
        target = Target("https", host, 443, "the Hub's Xet storage (HF_ENDPOINT does not move it)")
        if not self.claims.claim(target):
            return []
        return self.plain_host(target, "/")


def _unfinished(check_id: str, total: float) -> Check:
    return failed(check_id, "response-timeout", f"did not finish within the doctor's deadline ({total:.0f} s)",
                  "the network hangs: check the proxy and firewall, then run the doctor again")


def _wait(pending: Pending[T], check_id: str, run: _Run) -> T | Check:
    """The task's result, or the Check that says why there is none: the
    doctor reports its own failures instead of raising them."""
    try:
        return pending.result(run.deadline.until_end(GRACE))
    except TimeoutError:
        return _unfinished(check_id, run.opts.timeouts.total)
    except Exception as exc:
        return failed(check_id, "internal-error", f"the doctor itself failed here: {exc!r}",
                      "please report this bug with the output of `qwenhome doctor --json`")


def _safe(check_id: str, fn: Callable[[], Check]) -> Check:
    try:
        return fn()
    except Exception as exc:
        return failed(check_id, "internal-error", f"the doctor itself failed here: {exc!r}",
                      "please report this bug with the output of `qwenhome doctor --json`")


def _proxy_summary(run: _Run, checks: list[Check]) -> Check | None:
    env = run.settings.env
    if not any(env.get(v) for v in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY",
                                    "all_proxy", "ALL_PROXY")):
        return None
    failing_hosts = {c.host for c in checks if c.status == "fail" and c.host}
    targets, gates = run.seen()
    seen: list[str] = []
    for t in targets:
        if bypassed(env, t.scheme, t.host) and t.host not in seen:
            seen.append(t.host)
    used = sorted({proxy.display for _, (proxy, _) in gates})
    via = f"requests go through {', '.join(used)}" if used else "no request goes through the proxy"
    no_proxy = no_proxy_value(env)
    if not seen:
        return passed("proxy-bypass", f"proxy variables set; {via}; no host bypasses it")
    bad = [h for h in seen if h in failing_hosts]
    if bad:
        return warned(
            "proxy-bypass", "proxy-bypass",
            f"{', '.join(bad)} bypass{'es' if len(bad) == 1 else ''} the proxy (NO_PROXY={no_proxy}) and "
            "cannot be reached directly",
            f"remove {', '.join(bad)} from NO_PROXY (and no_proxy) so they go through the proxy",
            hosts=", ".join(seen),
        )
    return passed("proxy-bypass", f"proxy variables set; {via}; bypassing it via NO_PROXY: {', '.join(seen)}",
                  hosts=", ".join(seen))


def _unique_ids(checks: list[Check]) -> list[Check]:
    from dataclasses import replace

    seen: dict[str, int] = {}
    out = []
    for c in checks:
        n = seen.get(c.id, 0) + 1
        seen[c.id] = n
        out.append(c if n == 1 else replace(c, id=f"{c.id}#{n}"))
    return out


def run_doctor(
    settings: Settings,
    *,
    fix: bool = False,
    repos: Sequence[str] = (),
    repo: str | None = None,
    options: DoctorOptions | None = None,
    offline: bool = False,
    network: bool = True,
) -> DoctorReport:
    """Diagnose the network and the home for a pull of ``repo``/``repos`` from
    ``settings.sources``. Never raises for what it finds; every finding is a
    Check. Finishes within ``options.timeouts.total`` plus a fraction of a second.
    ``offline`` (the user's ``--offline``) or ``network=False`` (nothing is to
    be pulled): the home only, not one packet sent."""
    opts = options or DoctorOptions()
    started = time.monotonic()
    if offline or not network:
        why = "--offline" if offline else "nothing to pull"
        unprobed = skipped("network", f"{why}: sources, DNS, proxies and TLS were not checked",
                           ", ".join(s.host for s in settings.sources) or None)
        return _report(settings, opts, [unprobed], [], [], None, fix, started)
    wanted = [*([repo] if repo else []), *repos] or [DEFAULT_REPO]
    run = _Run(settings, opts, wanted, repos_chosen=bool(repo or repos))

    source_tasks = [(s, Pending(partial(run.source_task, s), name=f"source {s.name}"))
                    for s in settings.sources]
    xet_hosts = opts.xet_hosts if any(_is_hf_host(s.host) for s in settings.sources if s.kind == "hf") else ()
    xet_tasks = [(h, Pending(partial(run.xet_task, h), name=f"xet {h}")) for h in xet_hosts]
    probe_name = settings.sources[0].host if settings.sources else "huggingface.co"
    wsl_task: Pending[Check] = Pending(lambda: check_wsl(opts, run.deadline, probe_name), name="wsl")

    checks: list[Check] = [run.ca_check] if run.ca_check else []
    results: list[SourceResult] = []
    host_checks: list[Check] = []
    for source, pending in source_tasks:
        outcome = _wait(pending, f"api:{source.name}", run)
        if isinstance(outcome, Check):
            host_checks.append(outcome)
            results.append(SourceResult(source))
        else:
            host_checks += outcome[0]
            results.append(outcome[1])
    for host, xet in xet_tasks:
        xet_outcome = _wait(xet, f"http:{host}", run)
        host_checks += [xet_outcome] if isinstance(xet_outcome, Check) else xet_outcome
    _, gates = run.seen()
    checks += [_wait(gate, f"proxy:{key[0]}:{key[1]}", run) for key, (_, gate) in gates]
    summary = _proxy_summary(run, host_checks)
    if summary is not None:
        checks.append(summary)
    checks += host_checks
    checks.append(_wait(wsl_task, "wsl-resolv-conf", run))

    sizes: dict[str, RepoSize] = {}
    for result in results:
        for size in result.sizes:
            sizes.setdefault(size.repo, size)
    return _report(settings, opts, checks, results, list(sizes.values()),
                   any(r.reachable for r in results), fix, started)


def _report(settings: Settings, opts: DoctorOptions, checks: list[Check], results: list[SourceResult],
            sizes: list[RepoSize], online: bool | None, fix: bool, started: float) -> DoctorReport:
    """The home's checks after the network's (``online`` None: not probed), then the fixes."""
    home_checks = [
        _safe("disk-space", partial(check_disk, settings, sizes, opts)),
        _safe("wsl-home", partial(check_wsl_home, settings.home, opts)),
        _safe("cache-env", partial(check_cache_env, settings)),
        _safe("other-caches", partial(check_other_caches, settings, opts)),
        _safe("offline-flag", partial(check_offline_flag, settings, online)),
        _safe("hf-transfer", partial(check_hf_transfer, settings)),
    ]
    checks = checks + home_checks
    applied: list[FixApplied] = []
    if fix:
        checks += _apply_fixes(settings, results, home_checks, applied)
    return DoctorReport(tuple(_unique_ids(checks)), tuple(applied), time.monotonic() - started)


def _apply_fixes(settings: Settings, results: list[SourceResult], home_checks: list[Check],
                 applied: list[FixApplied]) -> list[Check]:
    extra: list[Check] = []
    # (name, step, what to do by hand if the step cannot be applied)
    steps: list[tuple[str, Callable[[], FixApplied | None], str]] = []
    reachable = [r.source.name for r in results if r.reachable]
    config = settings.config_file or settings.state_dir / "config.toml"
    steps.append(("reorder-sources", lambda: reorder_sources(settings, reachable),
                  f"edit {config}: move the [[sources]] tables of {', '.join(reachable) or '-'} to the top"))
    codes = {c.code for c in home_checks if c.status != "pass"}
    if codes & {"cache-env-mismatch", "deprecated-hf-transfer", "offline-flag-set"}:
        unset = []
        if "deprecated-hf-transfer" in codes:
            unset.append("HF_HUB_ENABLE_HF_TRANSFER")
        if "offline-flag-set" in codes:
            unset += ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"]
        steps.append(("write-env-sh", lambda: write_env_sh(settings, unset),
                      f"add the output of `qwenhome env` to {settings.home / 'env.sh'} and source it"))
    for name, step, by_hand in steps:
        try:
            done = step()
        except (ConfigError, OSError) as exc:
            extra.append(warned(f"fix:{name}", "fix-failed", f"could not apply {name}: {exc}", by_hand))
            continue
        if done is not None:
            applied.append(done)
    return extra
