"""The API server process: ``python -m qwenhome.app.serve`` (started by the launcher).

It runs with the one-home variables already in its environment (the launcher
sets them before this interpreter starts, hence before any Hugging Face
library is imported) and serves one model snapshot from the home.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import logs
from ..config import Settings, load_settings, log_level
from ..errors import EXIT_USAGE, QwenhomeError
from .guard import DEFAULT_BODY_LIMIT, AllowList, MiB, body_limit_from_mib
from .state import AppState, Engine, Extension

# Exit code when the engine cannot load: the launcher shows the reason and
# does not retry, since the same snapshot would fail the same way.
EXIT_ENGINE_LOAD = 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qwenhome.app.serve")
    p.add_argument("--home", required=True)
    p.add_argument("--model", required=True, help="the repository id served (Org/Name)")
    p.add_argument("--snapshot", required=True, type=Path, help="the snapshot folder in the home")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--engine", choices=("transformers", "vllm"), default="transformers")
    p.add_argument("--engine-url", default=None, help="the vLLM server to proxy to")
    p.add_argument("--source", action="append", default=[], help="pull sources for the model API")
    p.add_argument("--online", action="store_true", help="pulls from the API may use the network")
    p.add_argument("--max-queue", type=int, default=32)
    p.add_argument("--allowed-host", action="append", default=[], metavar="HOST[:PORT]",
                   help="another host name the server answers to (repeatable)")
    p.add_argument("--max-body-mib", type=float, default=DEFAULT_BODY_LIMIT / MiB,
                   help="largest JSON request body, MiB")
    return p


def engine_factory(args: argparse.Namespace) -> Engine:
    if args.engine == "vllm":
        from .vllm_engine import VllmProxy

        return VllmProxy(args.model, args.engine_url)
    from .transformers_engine import TransformersEngine

    return TransformersEngine(args.snapshot, args.model)


def optional_extensions(settings: Settings) -> tuple[Extension, ...]:
    """Parts of the system that are installed (image generation), else none."""
    try:
        from ..images.app import extension
    except ImportError:
        return ()
    # None when diffusers is missing or no image model is complete in the home.
    ext = extension(settings)
    return (ext,) if ext is not None else ()


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
    state = AppState(
        settings,
        args.model,
        engine_factory=lambda: engine_factory(args),
        extensions=optional_extensions(settings),
        max_queue=args.max_queue,
        allow=allow,
        max_body=max_body,
    )
    app = create_app(state)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)

    def watch_engine() -> None:
        state.wait_loaded()
        if state.engine_error is not None:
            print(state.engine_error.one_line(), file=sys.stderr, flush=True)
            server.should_exit = True

    import threading

    threading.Thread(target=watch_engine, daemon=True).start()
    server.run()
    return EXIT_ENGINE_LOAD if state.engine_error is not None else 0


if __name__ == "__main__":
    sys.exit(main())
