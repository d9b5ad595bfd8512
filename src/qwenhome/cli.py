"""The ``qwenhome`` command: parse, call the library, render. Nothing else.

Exit codes (stable): 0 ok; 1 failure; 2 usage or configuration; 3 not found
(repo, revision, file, or not in the home); 4 authentication / gated;
5 network or source failure; 6 integrity (hash mismatch); 7 disk full;
8 offline and not cached; 130 interrupted.
"""

from __future__ import annotations

# isort: off
from . import _loading  # first: Ctrl+C while the rest loads is one line, not a traceback
# isort: on
import argparse
import atexit
import json
import logging
import os
import shutil
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__, logs
from .argtypes import decimal, decimal_value, whole
from .config import (
    MAX_CONNECTIONS,
    MIRROR_CONNECTIONS,
    MIRROR_CONNECTIONS_MOST,
    MIRROR_HEAD_TIMEOUT,
    MIRROR_HEAD_TIMEOUT_RANGE,
    MIRROR_TOKEN_ENV,
    Settings,
    load_settings,
    log_level,
    mirror_token,
)
from .errors import EXIT_INTERRUPTED, EXIT_OK, NotCachedError, QwenhomeError, UsageError, printable
from .store import RepoRef, Store

if TYPE_CHECKING:
    from .doctor.xethosts import XetRoute

log = logging.getLogger(__name__)
_loading.release()

EXIT_CODES_HELP = __doc__.split("Exit codes (stable): ", 1)[1].strip() if __doc__ else ""


def _mib(text: str) -> float:
    n = decimal_value(text)
    if n is None:  # (its range is checked where the limit is made: body_limit_from_mib)
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: give a number of MiB, e.g. 4 or 0.5")
    return n


def _host(text: str) -> str:
    # An empty --host would bind every interface; odd characters never name an address.
    if not text or not text.isprintable() or any(c.isspace() for c in text) or len(text) > 253:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: give an address such as 127.0.0.1 (0.0.0.0 for every interface)")
    return text


def _output_file(text: str) -> Path:
    # (Path("") is "."; a file is written beside its name, so it must have one.)
    if Path(text).name in ("", ".", ".."):
        raise argparse.ArgumentTypeError(f"{text!r}: give a file name, e.g. model.tar")
    return Path(text)


MAX_DAYS = 36500  # gc --partial-age: a century is "never"
_LISTEN_PORT = whole(1, 65535)
_MIRROR_PORT = whole(0, 65535, " (0: any free port)")
_CONNECTIONS = whole(0, MAX_CONNECTIONS, " (0: adaptive)")
_DAYS = decimal(0, MAX_DAYS, "days")
_MIRROR_CONNECTIONS = whole(1, MIRROR_CONNECTIONS_MOST)
_HEAD_LO, _HEAD_HI = MIRROR_HEAD_TIMEOUT_RANGE
_HEAD_TIMEOUT = decimal(_HEAD_LO, _HEAD_HI, "seconds")


class _Parser(argparse.ArgumentParser):
    """argparse, with its complaint as the one error line every failure gets:
    ``error[usage]: …`` after the usage text, exit 2 (subcommands inherit it)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        err = UsageError(f"{self.prog}: {message}", code="usage", hint=f"{self.prog} --help")
        self.exit(2, err.one_line() + "\n")


def _common(*, after_command: bool) -> _Parser:
    """The options every command takes, before or after its name.

    After the name they must not clobber what was given before it: argparse
    copies every subcommand value over the main namespace, defaults included,
    so there the defaults are SUPPRESS (absent unless given), and --source,
    which may be given in both places, collects into ``late_source``."""
    quiet: dict[str, Any] = {"default": argparse.SUPPRESS} if after_command else {}
    p = _Parser(add_help=False)
    p.add_argument("--home", metavar="DIR", **quiet,
                   help="the model home (default: $QWEN_HOME, else $HF_HOME, else ~/.cache/huggingface)")
    p.add_argument("--json", action="store_true", **quiet, help="machine-readable output")
    p.add_argument("--source", action="append", default=[], metavar="URL",
                   dest="late_source" if after_command else "source",
                   help="fetch from this source instead of the configured ones (repeatable; modelscope:URL for ModelScope)")
    p.add_argument("--offline", action="store_true", **quiet,
                   help="never touch the network; use what is in the home")
    p.add_argument("-v", "--verbose", action="count", **(quiet or {"default": 0}),
                   help="log what happens to stderr (-v info, -vv debug; or QWENHOME_LOG=debug)")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _common(after_command=True)
    parser = _Parser(
        prog="qwenhome",
        description="One model home for a local Qwen system. The common options "
                    "(--home, --json, --source, --offline) go before or after the command.",
        epilog=f"Exit codes: {EXIT_CODES_HELP}",
        parents=[_common(after_command=False)],
    )
    parser.add_argument("--version", action="version", version=f"qwenhome {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pull", parents=[common], help="fetch repository snapshots into the home")
    p.add_argument("repos", nargs="+", metavar="REPO[@REV]")
    p.add_argument("--include", action="append", default=[], metavar="GLOB")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB")
    p.add_argument("--connections", type=_CONNECTIONS, default=None,
                   help=f"parallel connections, 1 to {MAX_CONNECTIONS} (default, or 0: adaptive)")

    p = sub.add_parser("path", parents=[common], help="print the local snapshot folder (works offline)")
    p.add_argument("repo", metavar="REPO[@REV]")

    sub.add_parser("ls", parents=[common], help="repositories in the home")

    p = sub.add_parser("verify", parents=[common], help="re-hash blobs against their recorded hashes")
    p.add_argument("repo", nargs="?", metavar="REPO")
    p.add_argument("--repair", action="store_true", help="remove bad blobs and fetch them again")

    p = sub.add_parser("rm", parents=[common], help="remove a repository or one revision")
    p.add_argument("repo", metavar="REPO[@REV]")

    p = sub.add_parser("gc", parents=[common], help="drop unreferenced blobs and stale partial downloads")
    p.add_argument("--partial-age", type=_DAYS, default=7.0, metavar="DAYS",
                   help="remove partial downloads untouched for this many days (default 7; 0 removes all)")

    p = sub.add_parser("env", parents=[common], help="shell exports that make every library use this home")
    p.add_argument("--shell", choices=("bash", "zsh", "fish", "powershell"), default="bash")

    p = sub.add_parser("sources", parents=[common], help="configured sources (and with --probe their health)")
    p.add_argument("--probe", action="store_true",
                   help="probe each source, and the Xet hosts (token, CAS, xorbs) of Hub sources")
    p.add_argument("--repo", default=None, metavar="REPO",
                   help="repository whose Xet hosts --probe checks (default Qwen/Qwen2.5-0.5B-Instruct)")

    p = sub.add_parser("adopt", parents=[common],
                       help="bring models from other caches or folders into the home (hard links, no download)")
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                   help="a Hugging Face or ModelScope cache, another home, or a model folder (default: known caches)")
    p.add_argument("--as", dest="as_repo", default=None, metavar="ORG/NAME",
                   help="repository id for a plain folder (default local/<folder name>)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be adopted")
    p.add_argument("--no-verify", action="store_true",
                   help="trust the other cache's blob names instead of hashing every byte (`qwenhome verify` checks later)")

    p = sub.add_parser("export", parents=[common], help="write a snapshot to a tar file for a machine without network")
    p.add_argument("repo", metavar="REPO[@REV]")
    p.add_argument("-o", "--output", type=_output_file, required=True, metavar="FILE",
                   help="FILE.tar (or .tar.gz to compress)")

    p = sub.add_parser("import", parents=[common], help="verify and place snapshots from `qwenhome export` files")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")

    p = sub.add_parser("doctor", parents=[common], help="diagnose network and cache problems")
    p.add_argument("--fix", action="store_true", help="apply safe, user-level fixes")
    p.add_argument("--repo", action="append", default=[], metavar="REPO",
                   help="repository whose files and size to check (repeatable; default Qwen/Qwen2.5-0.5B-Instruct)")

    p = sub.add_parser("mirror", help="serve the home over the Hub protocol")
    msub = p.add_subparsers(dest="mirror_command", required=True, metavar="ACTION")
    ms = msub.add_parser("serve", parents=[common], help="serve the store (read-only)")
    ms.add_argument("--host", type=_host, default="127.0.0.1",
                    help="address to bind (default 127.0.0.1: this machine only)")
    ms.add_argument("--port", type=_MIRROR_PORT, default=8090, help="port to bind (default 8090; 0: any free port)")
    ms.add_argument("--token", default=None,
                    help="require this bearer token from clients (visible in `ps`: prefer --token-file)")
    ms.add_argument("--token-file", default=None, metavar="FILE",
                    help=f"require the token this file holds (or set ${MIRROR_TOKEN_ENV}); unlike --token, not shown by `ps`")
    ms.add_argument("--repos", type=Path, default=None, metavar="DIR",
                    help="serve plain repository folders DIR/Org/Name instead of the store")
    ms.add_argument("--pull-through", action="store_true",
                    help="fetch repositories the store lacks from the sources (--source, HF_ENDPOINT) "
                         "while streaming them to the client; verified, kept in the store")
    ms.add_argument("--no-xet", action="store_true",
                    help="serve plain HTTP only (by default the mirror is also a Xet CAS for hf_xet clients)")
    ms.add_argument("--cas-port", type=_MIRROR_PORT, default=None, metavar="PORT",
                    help="serve Xet reconstructions on this port of their own (default: the mirror's port)")
    ms.add_argument("--xorb-port", type=_MIRROR_PORT, default=None, metavar="PORT",
                    help="serve Xet xorb bytes on this port of their own (default: with the reconstructions)")
    ms.add_argument("--xet-compression", choices=("none", "lz4", "auto"), default="none",
                    help="none (default): Xet chunks sent as they are, read from the blobs (no copy); lz4, auto: "
                         "compressed as the Hub's are, kept in $QWEN_HOME/qwenhome/xet/xorbs (a compressed copy)")
    ms.add_argument("--max-connections", type=_MIRROR_CONNECTIONS, default=MIRROR_CONNECTIONS, metavar="N",
                    help=f"connections served at once on each port, 1 to {MIRROR_CONNECTIONS_MOST} (default "
                         f"{MIRROR_CONNECTIONS}); past it the oldest idle one is closed, "
                         "or the newcomer gets 503 when all carry requests")
    ms.add_argument("--head-timeout", type=_HEAD_TIMEOUT, default=MIRROR_HEAD_TIMEOUT, metavar="SECONDS",
                    help=f"a request head must be whole this long after its first byte, {_HEAD_LO:g} to "
                         f"{_HEAD_HI:g} (default {MIRROR_HEAD_TIMEOUT:g}; cuts clients that send it a byte at a time)")

    p = sub.add_parser("launch", parents=[common], help="start the complete system: API + web page")
    p.add_argument("--model", default=None, metavar="REPO[@REV]")
    p.add_argument("--host", type=_host, default="127.0.0.1")
    p.add_argument("--port", type=_LISTEN_PORT, default=8000, help="port to bind, 1-65535 (default 8000)")
    p.add_argument("--engine", choices=("auto", "transformers", "vllm"), default="auto")
    p.add_argument("--demo", action="store_true", help="offline demo with a small model built locally")
    p.add_argument("--vllm-arg", action="append", default=[], metavar="ARG",
                   help="pass an option to `vllm serve` (repeatable), e.g. --vllm-arg=--tensor-parallel-size=2")
    p.add_argument("--allowed-host", action="append", default=[], metavar="HOST[:PORT]",
                   help="another host name the API and page answer to (repeatable); "
                        "this machine's own names always work")
    p.add_argument("--max-body-mib", type=_mib, default=None, metavar="MIB",
                   help="largest JSON request body (chat), MiB (default 4)")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """The edge: the process environment and flags become frozen Settings."""
    return load_settings(
        os.environ,
        home=args.home,
        sources=[*args.source, *getattr(args, "late_source", [])],
        offline=args.offline,
        connections=getattr(args, "connections", None),
    )


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=1) + "\n")


# -- commands --------------------------------------------------------------------
def cmd_pull(args: argparse.Namespace, settings: Settings) -> int:
    refs = [RepoRef.parse(r) for r in args.repos]
    decide_network = None
    if not settings.offline_forced:
        from .sources import EarlyDecision

        decide_network = EarlyDecision(settings)  # the probe runs while the rest loads
    from .pull import pull
    from .termui import JsonLines, ProgressView, human_size

    view: JsonLines | ProgressView = JsonLines() if args.json else ProgressView()
    cancel = threading.Event()
    try:
        for ref in refs:
            result = pull(settings, ref, include=args.include, exclude=args.exclude, on_event=view, cancel=cancel,
                          decide_network=decide_network)
            if not result.files and (args.include or args.exclude):  # (a typo in a pattern looks like success)
                print(f"warning: no file of {ref} matches --include/--exclude: the snapshot folder is empty",
                      file=sys.stderr)
            if args.json:  # JSON lines: progress events, then one result line
                sys.stdout.write(json.dumps({"event": "result", **result.to_dict()}) + "\n")
            else:
                how = "offline, from the home" if result.offline else (
                    f"{human_size(result.downloaded_bytes)} downloaded, {human_size(result.cached_bytes)} already here")
                print(f"{ref}: {result.commit[:12]} ({how}) in {result.seconds:.1f}s", file=sys.stderr)
                print(result.snapshot)
    except KeyboardInterrupt:
        cancel.set()
        raise
    finally:
        view.close()
    return EXIT_OK


def cmd_path(args: argparse.Namespace, settings: Settings) -> int:
    store = Store(settings.hub_cache, settings.state_dir)
    snap = store.snapshot_path(RepoRef.parse(args.repo))
    if args.json:
        emit_json({"repo": args.repo, "path": str(snap), "commit": snap.name})
    else:
        print(snap)
    return EXIT_OK


def cmd_ls(args: argparse.Namespace, settings: Settings) -> int:
    from .store.scan import list_repos
    from .termui import human_size, table

    repos = list_repos(Store(settings.hub_cache, settings.state_dir))
    if args.json:
        emit_json({"home": str(settings.home), "store": str(settings.hub_cache), "repos": [r.to_dict() for r in repos]})
        return EXIT_OK
    rows = []
    for r in repos:
        for rev in r.revisions or []:
            state = {True: "complete", False: f"incomplete ({len(rev.missing)} missing)", None: "unknown"}[rev.complete]
            rows.append([str(r.ref), rev.commit[:12], ",".join(rev.refs) or "-", str(rev.files), human_size(rev.size), state])
        if not r.revisions:
            rows.append([str(r.ref), "-", "-", "0", human_size(r.size), "empty"])
    print(f"store: {settings.hub_cache}")
    print(table(rows, ["REPO", "COMMIT", "REFS", "FILES", "SIZE", "STATE"]) if rows else "(empty)")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from .store.scan import list_repos
    from .store.verify import verify_repo

    store = Store(settings.hub_cache, settings.state_dir)
    refs = [RepoRef.parse(args.repo)] if args.repo else [r.ref for r in list_repos(store)]
    if args.repo and (not store.repo_dir(refs[0]).is_dir()
                      or (refs[0].revision is not None and store.resolve_commit(refs[0]) is None)):
        raise NotCachedError(f"{refs[0]} is not in the home ({settings.hub_cache}): nothing to verify", repo=args.repo)
    reports = [verify_repo(store, ref, remove_bad=args.repair) for ref in refs]
    repaired: list[str] = []
    if args.repair:
        from .pull import pull

        for ref, rep in zip(refs, reports, strict=True):
            if not rep.ok:  # (removed blobs, or files already missing)
                for info in list_repos(store):
                    if info.ref == ref.at(None):
                        for rev in info.revisions:
                            if rev.complete is False:
                                pull(settings, ref.at(rev.commit))
                                repaired.append(f"{ref.at(None)}@{rev.commit}")
    ok = all(r.ok for r in reports) or (args.repair and bool(repaired))
    if args.json:
        emit_json({"ok": ok, "repos": [r.to_dict() for r in reports], "repaired": repaired})
    else:
        for r in reports:
            status = "ok" if r.ok else f"{len(r.bad)} bad blob(s)"
            print(f"{r.repo}: {r.checked} blobs checked, {status}")
            for b in r.bad:
                print(f"  bad {b.blob[:16]}… ({', '.join(b.paths) or 'unlinked'}): {b.reason}")
        for name in repaired:
            print(f"repaired {name}")
    return EXIT_OK if ok else 6


def cmd_rm(args: argparse.Namespace, settings: Settings) -> int:
    from .store.remove import remove_repo
    from .termui import human_size

    report = remove_repo(Store(settings.hub_cache, settings.state_dir), RepoRef.parse(args.repo))
    if args.json:
        emit_json(report.to_dict())
    else:
        print(f"removed {', '.join(report.removed)}; freed {human_size(report.freed)}")
    return EXIT_OK


def cmd_gc(args: argparse.Namespace, settings: Settings) -> int:
    from .store.remove import collect_garbage
    from .termui import human_size

    report = collect_garbage(Store(settings.hub_cache, settings.state_dir), partial_age=args.partial_age * 86400)
    if args.json:
        emit_json(report.to_dict())
    else:
        print(f"removed {len(report.removed)} item(s); freed {human_size(report.freed)}")
    return EXIT_OK


def cmd_env(args: argparse.Namespace, settings: Settings) -> int:
    from .envexport import home_variables, render_exports

    if args.json:
        emit_json(home_variables(settings))
    else:
        sys.stdout.write(render_exports(settings, args.shell))
    return EXIT_OK


def cmd_sources(args: argparse.Namespace, settings: Settings) -> int:
    rows = [s.public() for s in settings.sources]
    probes: dict[str, Any] = {}
    routes: list[XetRoute] = []
    offline = args.probe and settings.offline_forced  # offline sends nothing, not even a probe
    if args.probe and not offline:
        from .doctor.options import DEFAULT_REPO
        from .doctor.xethosts import probe_xet
        from .sources import NetState, probe_sources, rank

        repo = args.repo or DEFAULT_REPO
        RepoRef.parse(repo)  # a bad id is a usage error before anything is sent
        results = probe_sources(settings)
        probes = {p.source.name: p.to_dict() for p in results}
        order = [s.name for s in rank(settings.sources, results, NetState.load(settings))]
        rows.sort(key=lambda r: order.index(str(r["name"])))  # the order a pull uses them in
        routes = probe_xet(settings, [p.source for p in results if p.ok], repo)
    xet = {r.source.name: r.to_dict() for r in routes}
    if args.json:
        out: dict[str, Any] = {"sources": [{**r, **({"probe": probes[str(r["name"])]} if str(r["name"]) in probes else {}),
                                            **({"xet": xet[str(r["name"])]} if str(r["name"]) in xet else {})}
                                           for r in rows]}
        if offline:
            out["probe"] = "offline: not probed"
        emit_json(out)
        return EXIT_OK
    from .termui import table

    out_rows = []
    for r in rows:
        p = probes.get(str(r["name"]))
        health = "-" if p is None else ("ok" if p["ok"] else str(p.get("code")))
        latency = "-" if not p or p.get("latency_ms") is None else f"{p['latency_ms']:.0f} ms"
        out_rows.append([str(r["name"]), str(r["kind"]), str(r["url"]), "yes" if r["token"] else "no", health,
                         latency])
    print(table(out_rows, ["NAME", "KIND", "URL", "TOKEN", "HEALTH", "LATENCY"]))
    if offline:
        print("offline (--offline or HF_HUB_OFFLINE): not probed")
    for route in routes:
        print(_render_xet(route))
    return EXIT_OK


def _render_xet(route: XetRoute) -> str:
    head = f"\nXet hosts of {route.source.label} (for {route.repo}{', ' + route.file if route.file else ''}):"
    lines = [head]
    if route.state != "xet":
        lines.append(f"  {route.state}: {route.note}")
    from .termui import table

    if route.hosts:
        cells = [[h.role, h.url, "ok" if h.ok else h.code,
                  "-" if h.latency_ms is None else f"{h.latency_ms:.0f} ms"] for h in route.hosts]
        lines += ["  " + line for line in table(cells, ["ROLE", "HOST", "HEALTH", "LATENCY"]).splitlines()]
    for h in route.hosts:
        if not h.ok:
            lines += [f"  {h.role}: {h.summary}", f"    fix: {h.fix}"]
    if route.state == "xet" and route.note:
        lines.append(f"  ({route.note})")
    return "\n".join(lines)


def cmd_adopt(args: argparse.Namespace, settings: Settings) -> int:
    from .store.adopt import adopt, default_places, discover
    from .termui import human_size, table

    store = Store(settings.hub_cache, settings.state_dir)
    paths = args.paths or default_places(settings.env, settings.hub_cache)
    found = discover(paths, as_repo=args.as_repo, own_store=settings.hub_cache)
    for warning in (w for f in found for w in f.skipped):
        print(printable(f"warning: {warning}"), file=sys.stderr)
    if args.dry_run:
        if args.json:
            emit_json({"found": [f.to_dict() for f in found]})
        else:
            rows = [[str(f.ref), f.kind, str(len(f.files)), human_size(sum(x.size for x in f.files)), str(f.origin)]
                    for f in found]
            print(table(rows, ["REPO", "KIND", "FILES", "SIZE", "FROM"]) if rows else "nothing found")
        return EXIT_OK
    reports = [adopt(store, f, verify=not args.no_verify) for f in found if f.files]  # (empty ones: warned above)
    ok = all(r.ok for r in reports)
    if args.json:
        emit_json({"ok": ok, "adopted": [r.to_dict() for r in reports]})
    elif not reports:
        print("nothing found to adopt" + ("" if args.paths else f" in {', '.join(map(str, paths)) or 'the usual caches'}"))
    else:
        rows = [[r.repo, r.commit[:12], r.kind, f"{r.linked}/{r.copied}/{r.present}",
                 human_size(r.bytes_linked), human_size(r.bytes_copied), "ok" if r.ok else f"{len(r.problems)} problem(s)"]
                for r in reports]
        print(table(rows, ["REPO", "COMMIT", "FROM", "LINKED/COPIED/PRESENT", "LINKED", "COPIED", "STATE"]))
        for problem in (p for r in reports for p in r.problems):
            print(printable(problem), file=sys.stderr)
    return EXIT_OK if ok else 6


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from .store.archive import export_snapshot
    from .termui import human_size

    folder = args.output.parent
    if not folder.is_dir():  # (the archive is written beside its name, then renamed)
        raise UsageError(f"cannot write {args.output}: {folder} is not a folder", code="invalid-path",
                         hint="create the folder first, or give -o a file in an existing folder")
    rep = export_snapshot(Store(settings.hub_cache, settings.state_dir), RepoRef.parse(args.repo), args.output)
    if args.json:
        emit_json(rep.to_dict())
    else:
        print(f"{rep.repo}@{rep.commit[:12]}: {rep.files} file(s), {human_size(rep.bytes)} -> {rep.file} "
              f"in {rep.seconds:.1f}s")
    return EXIT_OK


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from .store.archive import import_archive
    from .termui import human_size

    store = Store(settings.hub_cache, settings.state_dir)
    reports = [import_archive(store, f) for f in args.files]
    if args.json:
        emit_json({"imported": [r.to_dict() for r in reports]})
    else:
        for r in reports:
            print(f"{r.repo}@{r.commit[:12]}: {r.files} file(s) verified, {human_size(r.bytes)} written, "
                  f"{r.blobs_present} blob(s) already here; refs {', '.join(r.refs) or '-'}")
            print(r.snapshot)
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from .doctor import render_report, run_doctor

    report = run_doctor(settings, fix=args.fix, repos=tuple(args.repo), offline=args.offline)
    if args.json:
        emit_json(report.to_dict())
    else:
        print(render_report(report))
    return report.exit_code


def cmd_mirror(args: argparse.Namespace, settings: Settings) -> int:
    from .mirror import Limits, XetOptions, run_mirror

    def ready(server: Any) -> None:
        msg: dict[str, Any] = {"event": "listening", "url": server.url,
                               "limits": {"max_connections": server.max_connections,
                                          "head_timeout": server.head_timeout}}
        if server.xet is not None:
            msg["xet"] = {"cas_port": server.port_of("cas"), "xorb_port": server.port_of("xorb")}
        upstream = [str(s.public()["url"]) for s in settings.sources] if args.pull_through else []
        if upstream:
            msg["pull_through"] = upstream
        if args.json:
            emit_json(msg)
        else:
            print(f"qwenhome mirror serving {args.repos or settings.hub_cache} at {server.url} (Ctrl+C stops)")
            if upstream:
                print(f"repositories it lacks are fetched from: {', '.join(upstream)}")
            print(f"clients: HF_ENDPOINT={server.url}  or  qwenhome pull --source {server.url} REPO")
            if server.xet is not None:
                print(f"Xet: reconstructions on port {server.port_of('cas')}, xorbs on port "
                      f"{server.port_of('xorb')}; blobs are chunked in the background (-v shows progress)")
        sys.stdout.flush()

    token = mirror_token(os.environ, token=args.token, token_file=args.token_file)
    xet = None
    if not args.no_xet:
        xet = XetOptions(folder=settings.state_dir / "xet", cas_port=args.cas_port, xorb_port=args.xorb_port,
                         compression=args.xet_compression)
    elif args.cas_port is not None or args.xorb_port is not None or args.xet_compression != "none":
        raise UsageError("--cas-port, --xorb-port and --xet-compression serve Xet; --no-xet turns it off",
                         code="invalid-arguments", hint="drop --no-xet, or drop the Xet options")
    limits = Limits(max_connections=args.max_connections, head_timeout=args.head_timeout)
    run_mirror(settings, args.host, args.port, token, args.repos, pull_through=args.pull_through, on_ready=ready,
               xet=xet, limits=limits)
    return EXIT_OK


def cli_hint(prefix: str, base_prefix: str, path: str | None) -> str | None:
    """How to run the CLI of the virtualenv at ``prefix`` when ``qwenhome`` on
    ``path`` is not it (the launch script installs into .venv and leaves PATH alone)."""
    if prefix == base_prefix:
        return None
    exe = Path(prefix) / "bin" / "qwenhome"
    found = shutil.which("qwenhome", path=path)
    if not exe.exists() or (found is not None and Path(found).resolve() == exe.resolve()):
        return None
    return f"the CLI is {exe} (or `source {Path(prefix) / 'bin' / 'activate'}`, then `qwenhome --help`)"


def cmd_launch(args: argparse.Namespace, settings: Settings) -> int:
    from .app.launch import run_launch

    hint = cli_hint(sys.prefix, sys.base_prefix, os.environ.get("PATH"))

    def ready(_url: str) -> None:
        if hint:
            sys.stderr.write(f"qwenhome: {hint}\n")

    # The children (API server, vLLM) need the whole environment (PATH, locale,
    # CUDA); run_launch applies the home variables on top of it.
    return int(run_launch(settings, model=args.model, host=args.host, port=args.port, engine=args.engine,
                          demo=args.demo, base_env=os.environ, vllm_args=tuple(args.vllm_arg),
                          allowed_hosts=tuple(args.allowed_host), max_body_mib=args.max_body_mib,
                          sources=tuple(args.source), ready=ready) or 0)


COMMANDS = {
    "pull": cmd_pull,
    "path": cmd_path,
    "ls": cmd_ls,
    "verify": cmd_verify,
    "rm": cmd_rm,
    "gc": cmd_gc,
    "env": cmd_env,
    "sources": cmd_sources,
    "adopt": cmd_adopt,
    "export": cmd_export,
    "import": cmd_import,
    "doctor": cmd_doctor,
    "mirror": cmd_mirror,
    "launch": cmd_launch,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:  # (building the parser loads gettext: Ctrl+C may land there too)
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        print(_loading.INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    json_mode = bool(getattr(args, "json", False))
    try:
        logs.configure(log_level(os.environ, getattr(args, "verbose", 0)))
        settings = settings_from(args)
        return COMMANDS[args.command](args, settings)
    except QwenhomeError as exc:
        if json_mode:
            emit_json({"error": exc.to_dict()})
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(_loading.INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError as exc:  # the reader went away (`| head`): nothing more to say
        log.debug("output closed: %s", exc)
        return EXIT_OK
    except ImportError as exc:
        log.debug("import failed", exc_info=True)
        err = UsageError(f"a component is not installed: {exc.name}", code="missing-component",
                         hint="pip install 'qwenhome[app,engine]' (or run scripts/launch_complete_system.sh)")
        print(err.one_line(), file=sys.stderr)
        return err.exit_code


def exit_now(rc: int) -> NoReturn:
    """End the process without the interpreter's module-by-module teardown
    (about 20 ms after a pull here, a tenth of a small pull's wall time).
    Nothing needs it once a command has returned: files are written
    atomically and closed, and the threads left are daemons. ``atexit``
    callbacks still run and the standard streams are flushed; while a
    non-daemon thread is alive, the normal exit waits for it instead."""
    if any(not t.daemon and t is not threading.main_thread() for t in threading.enumerate()):
        sys.exit(rc)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError) as exc:  # a closed pipe: nothing more to say
            log.debug("%s not flushed at exit: %s", getattr(stream, "name", stream), exc)
    os._exit(rc)


def entry() -> None:  # pragma: no cover
    exit_now(main())


if __name__ == "__main__":  # pragma: no cover
    exit_now(main())
