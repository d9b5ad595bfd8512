"""qwenhome pull against its peers, on the same server, file for file verified.

    .venv/bin/python bench/transfer.py                      # the five default scenarios
    .venv/bin/python bench/transfer.py --scenario capped-link --repeat 5   # share of a 200 MB/s link
    .venv/bin/python bench/transfer.py --scenario one-big --size-mb 200 --tools qwenhome,curl
    .venv/bin/python bench/transfer.py --scenario resume    # kill -9 at half way, rerun
    .venv/bin/python bench/transfer.py --scenario big-rss   # 4 GB file, qwenhome's peak RSS

Starts the project's Hub-protocol server (``bench/_server.py``, own process)
over generated repositories and downloads each scenario's repository, in fresh
folders, with qwenhome (adaptive, and held to 16 connections), stock
huggingface_hub, hf_transfer, aria2c and curl (single stream, the reference),
in an order rotated every repetition. Every run is checked by sha256; a wrong
or missing file makes the run FAILED. Prints the medians of wall time, MB/s,
peak RSS, CPU seconds and CPU seconds per GB per tool with their ratio to
qwenhome, then the project's goals, and writes every run to
``bench/results/transfer-<time>.json``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import compileall
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from _common import (
    MB,
    ROOT,
    ServerProcess,
    cpu_s_per_gb,
    loadavg,
    median,
    result_header,
    run_measured,
    verify_files,
    write_result,
)
from _tools import TOOL_NAMES, invocation, missing, versions

sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
from tests.support.repos import make_repo  # noqa: E402

SPEED_SCENARIOS = ("one-big", "one-big-limited", "many-files", "latency")  # where qwenhome must beat its peers
DEFAULT_SCENARIOS = (*SPEED_SCENARIOS, "capped-link")
ALL_SCENARIOS = (*DEFAULT_SCENARIOS, "resume", "big-rss")
PEERS_TO_BEAT = ("hf_transfer", "aria2c")
RSS_LIMIT_MB = 200.0
LINK_SHARE_GOAL = 0.95


# -- scenarios and their repositories -------------------------------------------------
@dataclass(frozen=True)
class RepoSpec:
    repo_id: str
    files: dict[str, int]  # path -> size

    @property
    def total(self) -> int:
        return sum(self.files.values())


@dataclass(frozen=True)
class Scenario:
    name: str
    repo: RepoSpec
    bandwidth: float | None  # bytes/s per TCP connection
    latency: float | None  # seconds before every response
    default_tools: tuple[str, ...]
    about: str
    link: float | None = None  # bytes/s over all connections (the shaping proxy applies it)

    @property
    def shaped(self) -> bool:
        return bool(self.bandwidth or self.latency or self.link)


def one_big_repo(prefix: str, size_mb: int) -> RepoSpec:
    return RepoSpec(f"{prefix}/OneBig-{size_mb}MB", {"model.safetensors": size_mb * MB})


def many_files_repo(prefix: str, count: int, max_kb: int, big_mb: int) -> RepoSpec:
    """``count`` files log-uniform from 4 KB to ``max_kb`` (a tenth of them small
    JSON files stored as plain git blobs) plus two ``big_mb`` shards."""
    rng = random.Random(20260101)
    files: dict[str, int] = {}
    for i in range(count):
        size = int(4000 * (max_kb / 4) ** rng.random())
        ext = ".json" if i % 10 == 0 else ".safetensors"
        files[f"part-{i % 4}/f{i:03d}{ext}"] = size
    for i in (1, 2):
        files[f"model-{i:05d}-of-00002.safetensors"] = big_mb * MB
    return RepoSpec(f"{prefix}/Many-{count}x{max_kb}KB-2x{big_mb}MB", files)


def build_scenarios(args: argparse.Namespace) -> dict[str, Scenario]:
    big = one_big_repo(args.repo_prefix, args.size_mb)
    many = many_files_repo(args.repo_prefix, args.many_files, args.many_max_kb, args.many_big_mb)
    limit = args.limit_mbps * MB
    latency = args.latency_ms / 1000
    everyone = TOOL_NAMES
    # A single stream runs at the limit by construction (hf_hub shows it too): curl would
    # only add size/limit seconds (50 s for 1 GB) to the default run. --tools brings it back.
    not_curl = tuple(t for t in TOOL_NAMES if t != "curl")
    # On the capped link a single stream (hf_hub, curl) runs at the per-connection limit.
    many_streams = tuple(t for t in TOOL_NAMES if t not in ("hf_hub", "curl"))
    return {s.name: s for s in (
        Scenario("one-big", big, None, None, everyone,
                 f"1 file of {args.size_mb} MB, no limit (the loopback ceiling)"),
        Scenario("one-big-limited", big, limit, None, not_curl,
                 f"the same file, {args.limit_mbps:g} MB/s per TCP connection"),
        Scenario("many-files", many, limit, None, everyone,
                 f"{len(many.files)} files ({many.total / MB:.0f} MB), {args.limit_mbps:g} MB/s per connection"),
        Scenario("latency", many, None, latency, everyone,
                 f"the many-files repository, {args.latency_ms:g} ms before every response, no limit"),
        Scenario("capped-link", big, limit, args.link_latency_ms / 1000, many_streams,
                 f"the one-big file over a {args.link_mbps:g} MB/s link: {args.limit_mbps:g} MB/s per "
                 f"connection, {args.link_latency_ms:g} ms per request and per new connection",
                 link=args.link_mbps * MB),
        Scenario("resume", big, limit, None, ("qwenhome",),
                 f"qwenhome killed (-9) at {args.kill_at:.0%} of the file, then rerun; "
                 f"{args.limit_mbps:g} MB/s per connection"),
        Scenario("big-rss", one_big_repo(args.repo_prefix, args.big_size_mb), None, None, ("qwenhome",),
                 f"1 file of {args.big_size_mb} MB, no limit: qwenhome's peak RSS"),
    )}


def generate(root: Path, spec: RepoSpec, manifests: Path | None) -> dict[str, tuple[int, str]]:
    """Write ``spec`` under ``root`` (deterministic content) unless ``manifests`` says it
    is there already; returns the expected (size, sha256) of every file."""
    manifest = (manifests or root) / f"{spec.repo_id.replace('/', '--')}.json"
    if manifests is not None and manifest.exists() and (root / spec.repo_id).is_dir():
        return {k: (v[0], v[1]) for k, v in json.loads(manifest.read_text()).items()}
    t0 = time.monotonic()
    repo = make_repo(root, spec.repo_id, dict(spec.files), seed=7)
    expected = {rel: (f.size, f.sha256) for rel, f in repo.files.items()}
    if manifests is not None:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps(expected))
    print(f"generated {spec.repo_id} ({spec.total / MB:.0f} MB) in {time.monotonic() - t0:.1f} s",
          flush=True)
    return expected


# -- measuring ---------------------------------------------------------------------------
@dataclass
class Run:
    status: str  # ok | FAILED | timeout
    wall_s: float
    cpu_s: float
    rss_mb: float
    mbps: float | None
    server: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)
    loadavg: float | None = None  # the 1-minute load average when the run ended
    started: float | None = None  # unix time: the order the runs went in
    busy: float | None = None  # the share of the machine's CPU (all cores) busy during the run
    idle_ms: dict[str, float] | None = None  # capped-link: where the link stood idle (see link_idle)


@dataclass
class ToolResult:
    tool: str
    status: str  # ok | FAILED | timeout | skipped
    wall_s: float | None = None  # the medians of the tool's runs
    mbps: float | None = None
    rss_mb: float | None = None
    cpu_s: float | None = None
    cpu_s_per_gb: float | None = None
    link_share: float | None = None  # capped-link: bytes / (link rate x wall time)
    idle_ms: dict[str, float] | None = None  # capped-link: the medians of the runs' idle_ms
    busy: float | None = None  # the median share of the machine's CPU busy during a run
    server: dict[str, Any] | None = None  # of the run whose wall time is nearest the median
    note: str = ""
    runs: list[Run] = field(default_factory=list)
    ratios: dict[str, float | None] = field(default_factory=dict)  # this tool / qwenhome
    extra: dict[str, Any] = field(default_factory=dict)


class Counter(Protocol):
    """What counts a run's traffic: the server, the shaping proxy, or both."""

    url: str

    def mark(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...


class Shaped:
    """The benchmark's server behind the shaping proxy: the tools go to the proxy;
    requests come from the server's count, the link's bytes from the proxy's."""

    def __init__(self, server: ServerProcess, shaper: ServerProcess) -> None:
        self.server, self.shaper, self.url = server, shaper, shaper.url

    def mark(self) -> None:
        self.server.mark()
        self.shaper.mark()

    def stats(self) -> dict[str, Any]:
        stats = self.server.stats()
        proxy = self.shaper.stats()
        stats["shaper"] = {k: proxy[k] for k in ("connections", "bytes_sent", "cpu_s", "bin_s", "timeline")}
        return stats


def link_idle(stats: dict[str, Any], started: float, wall: float, link: float) -> dict[str, float] | None:
    """Where a run left the link idle, in ms, from the shaping proxy's byte
    timeline (taken out of ``stats``): ``start``, from the command's start to
    the first byte the link carried; ``under``, from then to the last byte,
    the time the link would have needed less the time it took (a ramp, gaps
    between requests, an uneven end); ``end``, from the last byte to the
    command's exit. The three add up to the wall time less bytes / link rate,
    and unlike the share they do not depend on how fast this machine is."""
    proxy = stats.get("shaper") if isinstance(stats.get("shaper"), dict) else stats
    timeline = proxy.pop("timeline", None)
    bin_s = proxy.pop("bin_s", None)
    if not timeline or not bin_s:
        return None
    first, last = timeline[0][0] * bin_s, (timeline[-1][0] + 1) * bin_s
    carried = sum(n for _, n in timeline)
    return {"start": round((first - started) * 1000), "under": round((last - first - carried / link) * 1000),
            "end": round((started + wall - last) * 1000)}


def measure_once(tool: str, sc: Scenario, endpoint: str, server: Counter | None,
                 expected: dict[str, tuple[int, str]], run_dir: Path, args: argparse.Namespace) -> Run:
    inv = invocation(tool, endpoint, sc.repo.repo_id, list(expected), run_dir, args.qwenhome_args)
    if server is not None:
        server.mark()
    started = round(time.time(), 3)
    m = run_measured(inv.argv, env=inv.env, cwd=run_dir, timeout=args.timeout, log_dir=run_dir / "logs")
    stats = server.stats() if server is not None else None
    idle = None
    if stats is not None:
        stats.pop("bytes_per_file", None)  # the total is kept; per file it would swell the result file
        idle = link_idle(stats, m.started, m.wall_s, sc.link) if sc.link else None
    if m.timed_out:
        return Run("timeout", round(m.wall_s, 3), round(m.cpu_s, 3), round(m.peak_rss_mb, 1), None, stats,
                   [f"> {args.timeout:g} s"], round(os.getloadavg()[0], 2), started, m.busy)
    problems = [] if m.returncode == 0 else [f"exit {m.returncode}: {m.stderr.strip()[-400:]}"]
    problems += verify_files(inv.output(), expected)
    status = "ok" if not problems else "FAILED"
    mbps = sc.repo.total / MB / m.wall_s if status == "ok" else None
    return Run(status, round(m.wall_s, 3), round(m.cpu_s, 3), round(m.peak_rss_mb, 1),
               None if mbps is None else round(mbps, 1), stats, problems[:5], round(os.getloadavg()[0], 2),
               started, m.busy, idle)


def summarize(tool: str, runs: list[Run], total: int, link: float | None = None) -> ToolResult:
    """The medians of the tool's runs (MB/s and the link's share from the median
    wall time); any bad run fails it."""
    bad = [r for r in runs if r.status != "ok"]
    if bad:
        r = bad[0]
        result = ToolResult(tool, r.status, r.wall_s, None, r.rss_mb, r.cpu_s, server=r.server,
                            note="; ".join(r.problems), runs=runs)
        if r.status == "timeout":
            # it had not finished: its rate was below size / time-out (the goals' conservative bound)
            result.extra["mbps_below"] = round(total / MB / r.wall_s, 1)
            if r.server:
                result.extra["mbps_until_timeout"] = round(r.server["bytes_sent"] / MB / r.wall_s, 1)
        return result
    wall = round(median([r.wall_s for r in runs]), 3)
    cpu = round(median([r.cpu_s for r in runs]), 3)
    mid = min(runs, key=lambda r: abs(r.wall_s - wall))
    idles = [r.idle_ms for r in runs if r.idle_ms]
    idle = {k: median([i[k] for i in idles]) for k in idles[0]} if idles else None
    busies = [r.busy for r in runs if r.busy is not None]
    return ToolResult(tool, "ok", wall, round(total / MB / wall, 1), median([r.rss_mb for r in runs]),
                      cpu, cpu_s_per_gb(cpu, total),
                      None if link is None else round(total / (link * wall), 3), idle,
                      round(median(busies), 3) if busies else None, mid.server, "", runs)


def add_ratios(results: list[ToolResult]) -> None:
    base = next((r for r in results if r.tool == "qwenhome" and r.status == "ok"), None)
    for r in results:
        for key in ("mbps", "rss_mb", "cpu_s_per_gb"):
            mine, ref = getattr(r, key), getattr(base, key) if base else None
            r.ratios[key] = round(mine / ref, 3) if mine is not None and ref else None


def rounds(tools: Sequence[str], repeat: int) -> list[list[str]]:
    """The order of every round: the tools rotated by one each round, so that no
    tool always goes first (on a warm page cache, after a cold one, ...)."""
    n = len(tools)
    return [[*tools[i % n:], *tools[:i % n]] for i in range(repeat)] if n else []


def run_scenario(sc: Scenario, tools: Sequence[str], endpoint: str | None, server: Counter | None,
                 expected: dict[str, tuple[int, str]], args: argparse.Namespace) -> list[ToolResult]:
    """Every tool once per round, rounds repeated and rotated, so a change in the
    machine's load during the scenario hits all tools alike."""
    url = endpoint or (server.url if server else "")
    skipped = {tool: why for tool in tools if (why := missing(tool))}
    runs: dict[str, list[Run]] = {tool: [] for tool in tools if tool not in skipped}
    for i, order in enumerate(rounds(list(runs), args.repeat)):
        for tool in order:
            run_dir = args.out_dir / f"{sc.name}-{tool}-{i}"
            runs[tool].append(measure_once(tool, sc, url, server, expected, run_dir, args))
            last = runs[tool][-1]
            if last.status == "ok" or not args.keep_failed:
                shutil.rmtree(run_dir, ignore_errors=True)
            print(f"  {tool:<12} {last.status:<8} {last.wall_s:7.2f} s", flush=True)
    results = [ToolResult(t, "skipped", note=skipped[t]) if t in skipped
               else summarize(t, runs[t], sc.repo.total, sc.link) for t in tools]
    add_ratios(results)
    return results


def _covered(partials: Path) -> tuple[int, int]:
    """(bytes marked done, file size) from qwenhome's part maps."""
    done = size = 0
    for p in partials.glob("*.part.json"):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        done += sum(e - s for s, e in data.get("done", []))
        size += int(data.get("size", 0))
    return done, size


def run_resume(sc: Scenario, url: str, server: Counter | None, expected: dict[str, tuple[int, str]],
               args: argparse.Namespace) -> list[ToolResult]:
    """kill -9 qwenhome once its part map shows ``--kill-at`` of the file, rerun to
    the end, and count what the server sent for the file over both runs."""
    run_dir = args.out_dir / "resume"
    inv = invocation("qwenhome", url, sc.repo.repo_id, list(expected), run_dir, args.qwenhome_args)
    partials = run_dir / "home" / "qwenhome" / "partials"
    if server is not None:
        server.mark()
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    claimed = 0
    with open(run_dir / "logs" / "first.log", "wb") as log:
        proc = subprocess.Popen(inv.argv, env=inv.env, cwd=run_dir, stdout=log, stderr=log,
                                start_new_session=True)
        t0, killed_at = time.monotonic(), None
        while proc.poll() is None and time.monotonic() - t0 < args.timeout:
            done, size = _covered(partials)
            if size and done >= args.kill_at * size:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at, claimed = done / size, done
                break
            time.sleep(0.01)
        if proc.poll() is None and killed_at is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first_wall = time.monotonic() - t0
    first_sent = server.stats()["bytes_sent"] if server is not None else None
    second = measure_once("qwenhome", sc, url, None, expected, run_dir, args)
    stats = server.stats() if server is not None else None
    total = sc.repo.total
    sent = stats["bytes_sent"] if stats else None
    second.mbps = None  # the rerun fetches only what is missing: its MB/s would mislead
    result = summarize("qwenhome", [second], sc.repo.total)
    result.server = stats
    result.extra = {
        "killed_at_fraction": None if killed_at is None else round(killed_at, 3),
        "first_run_s": round(first_wall, 2),
        # sent before the kill but not claimed by the part map: fetched again by the rerun
        "first_run_sent_unclaimed": None if first_sent is None else first_sent - claimed,
        "bytes_sent_total": sent,
        "bytes_sent_over_size": None if sent is None else round(sent / total, 4),
    }
    if killed_at is None:
        result.note = "finished or timed out before the kill point: nothing to resume"
    shutil.rmtree(run_dir, ignore_errors=True)
    return [result]


# -- goals and report --------------------------------------------------------------------
def check_goals(report: dict[str, list[ToolResult]]) -> list[dict[str, Any]]:
    goals: list[dict[str, Any]] = []

    def add(scenario: str, goal: str, value: float | None, target: float, higher: bool) -> None:
        passed = value is not None and (value >= target if higher else value <= target)
        goals.append({"scenario": scenario, "goal": goal, "value": value,
                      "op": ">=" if higher else "<=", "target": target, "passed": passed})

    for name, results in report.items():
        by = {r.tool: r for r in results}
        qh = by.get("qwenhome")
        qh_mbps = qh.mbps if qh else None

        if name in SPEED_SCENARIOS:
            peers = [m for t in PEERS_TO_BEAT if (m := _rate(by, t))]
            if peers:
                add(name, "qwenhome MB/s / best of hf_transfer, aria2c", _ratio(qh_mbps, max(peers)), 1.2, True)
        if name == "one-big-limited" and "hf_hub" in by:
            add(name, "qwenhome MB/s / huggingface_hub", _ratio(qh_mbps, _rate(by, "hf_hub")), 10.0, True)
        if name == "one-big" and "curl" in by:
            add(name, "qwenhome MB/s / curl (single stream, no hash)", _ratio(qh_mbps, _rate(by, "curl")), 0.8, True)
        if qh is not None and qh.rss_mb is not None:
            add(name, "qwenhome peak RSS MB", round(qh.rss_mb, 1), RSS_LIMIT_MB, False)
        if name == "capped-link" and qh is not None:
            add(name, "qwenhome's share of the link (first byte to last)", qh.link_share, LINK_SHARE_GOAL, True)
        if name == "resume" and qh is not None:
            add(name, "bytes sent for the file / its size", qh.extra.get("bytes_sent_over_size"), 1.1, False)
    return goals


def _rate(by: dict[str, ToolResult], tool: str) -> float | None:
    """A peer's MB/s; for a peer that timed out, the bound size / time-out."""
    r = by.get(tool)
    return None if r is None else r.mbps or r.extra.get("mbps_below")


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def print_table(sc: Scenario, results: list[ToolResult], repeat: int) -> None:
    print(f"\n== {sc.name}: {sc.about} (medians of {repeat})")
    link = sc.link is not None
    head = (f"{'tool':<12}{'status':<9}{'wall s':>8}{'MB/s':>7}{'link' if link else '':>6}{'CPU s':>7}"
            f"{'CPU s/GB':>9}{'RSS MB':>7}{'MB/s÷qh':>8}{'CPU/GB÷qh':>10}{'RSS÷qh':>7}"
            f"{'conns':>6}{'reqs':>6}{'srv CPU':>8}")
    print(head)
    for r in results:
        conns = r.server.get("connections") if r.server else None
        reqs = r.server.get("requests") if r.server else None
        srv_cpu = r.server.get("cpu_s") if r.server else None
        print(f"{r.tool:<12}{r.status:<9}{_fmt(r.wall_s, '.2f'):>8}{_fmt(r.mbps, '.0f'):>7}"
              f"{_fmt(r.link_share, '.2f') if link else '':>6}{_fmt(r.cpu_s, '.2f'):>7}"
              f"{_fmt(r.cpu_s_per_gb, '.2f'):>9}{_fmt(r.rss_mb, '.0f'):>7}"
              f"{_fmt(r.ratios.get('mbps'), '.2f'):>8}{_fmt(r.ratios.get('cpu_s_per_gb'), '.2f'):>10}"
              f"{_fmt(r.ratios.get('rss_mb'), '.2f'):>7}"
              f"{_fmt(conns, 'd'):>6}{_fmt(reqs, 'd'):>6}{_fmt(srv_cpu, '.2f'):>8}")
        if link and r.idle_ms:
            print(f"{'':<12}link idle ms: {r.idle_ms['start']:.0f} at the start, {r.idle_ms['under']:.0f} under way, "
                  f"{r.idle_ms['end']:.0f} at the end; machine CPU busy {_fmt(r.busy, '.0%')}")
        if r.note:
            print(f"{'':<12}{r.note[:300]}")
        if r.extra:
            print(f"{'':<12}" + ", ".join(f"{k}={v}" for k, v in r.extra.items()))


def print_goals(goals: list[dict[str, Any]]) -> None:
    print("\n== goals")
    for g in goals:
        mark = "PASS" if g["passed"] else "FAIL"
        print(f"{mark}  {g['scenario']:<16} {g['goal']:<48} {_fmt(g['value'], 'g'):>8} {g['op']} {g['target']:g}")


# -- command line ---------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", action="append", choices=ALL_SCENARIOS, default=None,
                    help="repeatable; default: " + ", ".join(DEFAULT_SCENARIOS))
    ap.add_argument("--tools", default=None,
                    help=f"comma-separated subset of {','.join(TOOL_NAMES)} (default: the scenario's)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per tool, in an order rotated every round; medians are reported")
    ap.add_argument("--size-mb", type=int, default=1000, help="the one-big file (MB)")
    ap.add_argument("--big-size-mb", type=int, default=4000, help="the big-rss file (MB)")
    ap.add_argument("--limit-mbps", type=float, default=20.0, help="per-connection limit (MB/s)")
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--link-mbps", type=float, default=200.0, help="capped-link: the whole link (MB/s)")
    ap.add_argument("--link-latency-ms", type=float, default=20.0,
                    help="capped-link: held before every request, and once more on each new connection")
    ap.add_argument("--many-files", type=int, default=200)
    ap.add_argument("--many-max-kb", type=int, default=8000, help="largest of the many files (KB)")
    ap.add_argument("--many-big-mb", type=int, default=100, help="each of the two big shards (MB)")
    ap.add_argument("--kill-at", type=float, default=0.5, help="resume: fraction done when killed")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per tool run")
    ap.add_argument("--qwenhome-args", type=lambda s: s.split(), default=[],
                    help='extra arguments for qwenhome pull, e.g. "--connections 16"')
    ap.add_argument("--endpoint", default=None,
                    help="benchmark against this Hub-compatible server instead of starting ours "
                         "(the repositories must be there: see --generate-only)")
    ap.add_argument("--shape", action="store_true",
                    help="with --endpoint: put bench/_shaper.py in front of it, which applies each scenario's "
                         "per-connection limit and latency and counts the bytes sent (for resume)")
    ap.add_argument("--ca-file", type=Path, default=None,
                    help="with an https:// --endpoint: the CA to trust (every tool is given it: SSL_CERT_FILE, "
                         "REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, aria2c --ca-certificate)")
    ap.add_argument("--cdn-redirect", action="store_true",
                    help="the server answers resolve for LFS files with a 302 to a CDN URL, as the Hub does")
    ap.add_argument("--repo-prefix", default="Bench", help="organisation of the generated repositories")
    ap.add_argument("--generate-only", type=Path, default=None, metavar="DIR",
                    help="write the scenarios' repositories as plain folders under DIR and exit")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep generated repositories here between invocations (default: a temporary folder)")
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="where the tools write (default: a folder in /dev/shm when it has room, "
                         "else WORKDIR/runs); give a folder on disk to include the disk")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--keep-failed", action="store_true", help="keep the folders of failed runs")
    args = ap.parse_args(argv)
    args.scenario = args.scenario or list(DEFAULT_SCENARIOS)
    return args


def default_out_dir(work: Path, largest: int) -> Path:
    """tmpfs (/dev/shm) when it has room: measured here, page-cache writes to the
    disk run at 100-300 MB/s and would bound every tool; else ``work/runs``."""
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and shutil.disk_usage(shm).free > largest + 1024 * MB:
            return shm / f"qwenhome-bench-{os.getpid()}"
    except OSError:
        pass
    return work / "runs"


def disk_fits(sc: Scenario, work: Path, out_dir: Path) -> str | None:
    """Room for the repository (unless generated already) and for one download of it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    needs: dict[int, tuple[Path, int]] = {}
    for folder, size in ((work, 0 if (work / "repos" / sc.repo.repo_id).is_dir() else sc.repo.total),
                         (out_dir, sc.repo.total + 256 * MB)):
        dev = folder.stat().st_dev
        needs[dev] = (folder, needs.get(dev, (folder, 0))[1] + size)
    for folder, need in needs.values():
        free = shutil.disk_usage(folder).free
        if free < need:
            return f"needs {need / MB:.0f} MB free at {folder}, has {free / MB:.0f} MB"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.ca_file is not None:
        ca = str(args.ca_file.resolve())
        os.environ.update({"SSL_CERT_FILE": ca, "REQUESTS_CA_BUNDLE": ca, "CURL_CA_BUNDLE": ca})
    scenarios = build_scenarios(args)
    chosen = [scenarios[n] for n in dict.fromkeys(args.scenario)]
    if args.generate_only is not None:
        for spec in {sc.repo.repo_id: sc.repo for sc in chosen}.values():
            generate(args.generate_only, spec, None)
            print(f"{args.generate_only / spec.repo_id}")
        return 0
    own = []  # folders this run made and removes at the end
    if args.workdir is None:
        own.append(Path(tempfile.mkdtemp(prefix="qwenhome-bench-transfer-")))
    work = args.workdir or own[0]
    work.mkdir(parents=True, exist_ok=True)
    if args.out_dir is None:
        args.out_dir = default_out_dir(work, max(sc.repo.total for sc in chosen))
        own.append(args.out_dir)
    print(f"tools write under {args.out_dir}", flush=True)
    # Installed packages come with their bytecode (pip compiles at install);
    # a fresh clone run with PYTHONDONTWRITEBYTECODE=1 would otherwise compile
    # qwenhome's modules inside every timed run.
    compileall.compile_dir(str(ROOT / "src" / "qwenhome"), quiet=1)
    doc = result_header("transfer", argv)
    if doc["source"]["uncommitted"]:
        print(f"measuring {doc['source']['commit'][:10]} plus uncommitted: {', '.join(doc['source']['uncommitted'])}")
    doc.update({"out_dir": str(args.out_dir), "versions": versions(), "endpoint": args.endpoint,
                "repeat": args.repeat, "scenarios": {}})
    t0 = time.monotonic()
    report: dict[str, list[ToolResult]] = {}
    try:
        for sc in chosen:
            load_before = loadavg()
            report[sc.name] = run_one(sc, work, args)
            print_table(sc, report[sc.name], args.repeat)
            doc["scenarios"][sc.name] = scenario_doc(sc, report[sc.name], args, load_before)
    finally:
        for folder in own:
            shutil.rmtree(folder, ignore_errors=True)
    doc["elapsed_s"] = round(time.monotonic() - t0, 1)
    doc["goals"] = check_goals(report)
    print_goals(doc["goals"])
    out = write_result(doc, args.json_out)
    print(f"\nwrote {out}")
    return 0


def scenario_doc(sc: Scenario, results: list[ToolResult], args: argparse.Namespace,
                 load_before: list[float]) -> dict[str, Any]:
    tools = [r.tool for r in results if r.status != "skipped"]
    return {
        "about": sc.about, "repo": sc.repo.repo_id, "files": len(sc.repo.files), "bytes": sc.repo.total,
        "bandwidth_per_connection": sc.bandwidth, "latency_s": sc.latency, "link": sc.link,
        "rounds": [] if sc.name == "resume" else rounds(tools, args.repeat),
        "loadavg_before": load_before, "loadavg_after": loadavg(), "results": [asdict(r) for r in results],
    }


def run_one(sc: Scenario, work: Path, args: argparse.Namespace) -> list[ToolResult]:
    print(f"\n-- {sc.name} (load average {os.getloadavg()[0]:.1f})", flush=True)
    tools = args.tools.split(",") if args.tools else list(sc.default_tools)
    unknown = set(tools) - set(TOOL_NAMES)
    if unknown:
        raise SystemExit(f"unknown tools: {', '.join(sorted(unknown))}")
    no_room = disk_fits(sc, work, args.out_dir)
    if no_room:
        return [ToolResult(t, "skipped", note=no_room) for t in tools]
    repos = work / "repos"
    expected = generate(repos, sc.repo, work / "expected")

    def shaper(upstream: str) -> ServerProcess:
        return ServerProcess.shaper(upstream, bandwidth=sc.bandwidth, latency=sc.latency, link=sc.link,
                                    connect_latency=sc.latency if sc.link else None)

    def run(counter: Counter | None, url: str) -> list[ToolResult]:
        if sc.name == "resume":
            return run_resume(sc, url, counter, expected, args)
        return run_scenario(sc, tools, url, counter, expected, args)

    if args.endpoint and (args.shape or sc.link) and (sc.shaped or sc.name == "resume"):
        # The scenario's network comes from the shaping proxy, which also
        # counts what the server sent (connections, bytes) for every tool.
        # (An unshaped scenario goes straight to the server: its ceiling.)
        with shaper(args.endpoint) as proxy:
            return run(proxy, proxy.url)
    if args.endpoint:
        if sc.shaped:
            print("  note: with --endpoint, the limit/latency must come from that server or a proxy (--shape)")
        return run(None, args.endpoint)
    if sc.link:
        # A link shared by all connections: the server sends unshaped, the proxy shapes.
        with ServerProcess(repos, bandwidth=None, latency=None, hashes=work / "hashes.json",
                           redirect_lfs=args.cdn_redirect) as server, shaper(server.url) as proxy:
            both = Shaped(server, proxy)
            return run(both, both.url)
    with ServerProcess(repos, bandwidth=sc.bandwidth, latency=sc.latency, hashes=work / "hashes.json",
                       redirect_lfs=args.cdn_redirect) as server:
        return run(server, server.url)


if __name__ == "__main__":
    raise SystemExit(main())
