"""The API server process: ``python -m qwenhome.app.serve`` (started by the launcher).

It runs with the one-home variables already in its environment (the launcher
sets them before this interpreter starts, hence before any Hugging Face
library is imported) and serves one model snapshot from the home. The
engines run in worker processes that inherit that environment; this process
imports no engine. An engine that cannot load at start ends the server with
:data:`EXIT_ENGINE_LOAD` and the reason.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .. import logs
from ..argtypes import whole
from ..config import Settings, load_settings, log_level
from ..errors import EXIT_USAGE, QwenhomeError
from .guard import DEFAULT_BODY_LIMIT, AllowList, MiB, body_limit_from_mib
from .serving import DEFAULT_READY_WAIT
from .state import AppState, Extension
from .workers.process import WorkerOptions

# Exit code when the engine cannot load: the launcher shows the reason and
# does not retry, since the same snapshot would fail the same way.
EXIT_ENGINE_LOAD = 3


def _number(text: str) -> float:
    """A finite number in ASCII, as the launcher writes it (repr of a float:
    1e-05 too); float() alone also takes 1_0, １, nan and inf."""
    try:
        n = float(text) if text.isascii() and "_" not in text and text == text.strip() else math.nan
    except ValueError:
        n = math.nan
    if not math.isfinite(n) or n < 0:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: give a number, e.g. 4 or 0.5")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qwenhome.app.serve")
    p.add_argument("--home", required=True)
    p.add_argument("--model", required=True, help="the repository id served (Org/Name)")
    p.add_argument("--snapshot", required=True, type=Path, help="the snapshot folder in the home")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=whole(1, 65535), default=8000)
    p.add_argument("--engine", choices=("transformers", "vllm"), default="transformers")
    p.add_argument("--engine-url", default=None, help="the vLLM server to proxy to")
    p.add_argument("--source", action="append", default=[], help="pull sources for the model API")
    p.add_argument("--online", action="store_true", help="pulls from the API may use the network")
    p.add_argument("--max-queue", type=whole(1, 100_000), default=32)
    p.add_argument("--allowed-host", action="append", default=[], metavar="HOST[:PORT]",
                   help="another host name the server answers to (repeatable)")
    p.add_argument("--max-body-mib", type=_number, default=DEFAULT_BODY_LIMIT / MiB,
                   help="largest JSON request body, MiB")
    p.add_argument("--ready-wait", type=_number, default=DEFAULT_READY_WAIT, metavar="SECONDS",
                   help="how long a request waits for an engine that loads or restarts (then 503, Retry-After)")
    return p


def optional_extensions(settings: Settings, workers: WorkerOptions, ready_wait: float) -> tuple[Extension, ...]:
    """Parts of the system that are installed (image generation), else none."""
    try:
        from ..images.app import extension
    except ImportError:
        return ()
    # None when diffusers is missing.
    ext = extension(settings, workers=workers, ready_wait=ready_wait)
    return (ext,) if ext is not None else ()


def freeze_heap() -> None:
    """Move every object alive now out of the collector's reach. What the
    imports and the start made lives as long as the server; left in the
    oldest generation, each full collection walks all of it (28 ms here, on
    the event loop: the p99 of ``/health`` under load). Frozen, a full
    collection walks only what requests made since."""
    gc.collect()
    gc.freeze()


def _say(msg: str) -> None:
    print(f"qwenhome: {msg}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(log_level(os.environ))
    import uvicorn

    from .server import create_app

    # HF_HUB_OFFLINE=1 is set for the engine; pulls asked for through the API
    # may still use the network unless the user asked for offline.
    settings = load_settings(os.environ, home=args.home, sources=args.source).with_offline(not args.online)
    try:
        allow = AllowList.parse(args.host, args.allowed_host)
        max_body = body_limit_from_mib(args.max_body_mib)
    except QwenhomeError as exc:
        print(exc.one_line(), file=sys.stderr, flush=True)
        return EXIT_USAGE
    workers = WorkerOptions()
    proxy = None
    if args.engine == "vllm":
        from .vllm_engine import VllmProxy

        proxy = VllmProxy(args.model, args.engine_url)
    state = AppState(
        settings,
        args.model,
        snapshot=None if proxy is not None else args.snapshot,
        proxy=proxy,
        extensions=optional_extensions(settings, workers, args.ready_wait),
        max_queue=args.max_queue,
        allow=allow,
        max_body=max_body,
        ready_wait=args.ready_wait,
        workers=workers,
        say=_say,
    )
    app = create_app(state)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    failed: list[QwenhomeError] = []

    def watch_start() -> None:
        # Past the start, a failed engine leaves the server up (another model
        # can be served from the page); at the start it is the launch's error.
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        state.wait_settled()
        freeze_heap()  # what the start made (the workers' readers, the routes' caches) too
        failed.extend(state.load_errors())
        if failed:
            print(failed[0].one_line(), file=sys.stderr, flush=True)
            server.should_exit = True

    threading.Thread(target=watch_start, daemon=True).start()
    freeze_heap()
    server.run()
    return EXIT_ENGINE_LOAD if failed else 0


if __name__ == "__main__":
    sys.exit(main())
