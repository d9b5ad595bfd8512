"""The engine worker process: ``python -m qwenhome.app.workers.main --fd N``.

Started by :class:`.process.WorkerProcess` with one end of a socket pair. The
first message says what to serve (kind, model, snapshot, options, nice,
threads): the worker sets torch's threads, loads the handler of that kind,
lowers its priority and says ``ready`` (or ``failed`` with the error, then
exits with :data:`EXIT_LOAD_FAILED`). Requests then run one at a time, in
arrival order. ``cancel`` sets the request's event, whether it runs or waits. When the
socket closes (the API stopped the worker, or died) the worker exits at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import queue
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ...errors import QwenhomeError
from .protocol import Channel, Message

log = logging.getLogger("qwenhome.app.workers.main")

EXIT_LOAD_FAILED = 3

# kind -> "module:class" of its handler, imported only in the worker.
HANDLERS = {
    "chat": "qwenhome.app.workers.chat:ChatHandler",
    "image": "qwenhome.images.worker:ImageHandler",
}

Emit = Callable[[Message], None]


class Handler(Protocol):
    def info(self) -> dict[str, Any]: ...

    def handle(self, msg: Message, emit: Emit, cancel: threading.Event) -> Message:
        """Serve one request: progress through ``emit``, then the end message
        (``{"end": "done"|"cancelled"|"error", ...}``). Never raises for a bad request."""
        ...


def load_handler(init: Message) -> Handler:
    module, _, name = HANDLERS[init["kind"]].partition(":")
    cls: Any = getattr(importlib.import_module(module), name)
    handler: Handler = cls(init["model"], init["snapshot"], init.get("options") or {})
    return handler


def _lower_priority(nice: int) -> None:
    """``nice`` more for every thread of this process. On Linux a nice value
    belongs to a thread: ``os.nice`` alone would leave the threads made while
    loading (torch's among them) at the API's priority."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        target = min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice)
        tids = [int(t) for t in os.listdir("/proc/self/task")] if os.path.isdir("/proc/self/task") else [0]
    except OSError:
        log.debug("cannot read this worker's priority or threads", exc_info=True)
        return
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, target)
        except OSError:  # a thread that ended meanwhile, or no permission
            log.debug("cannot lower the priority of thread %s", tid, exc_info=True)


def _set_threads(threads: int) -> None:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


class Worker:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.jobs: queue.Queue[Message] = queue.Queue()
        self.cancels: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def send(self, msg: Message) -> None:
        try:
            self.channel.send(msg)
        except OSError:
            os._exit(0)  # the API is gone: nobody reads what this worker makes

    def read(self) -> None:
        """Runs from the start, before the model loads: a closed socket ends the process."""
        while (msg := self.channel.recv()) is not None:
            op = msg.get("op")
            if op == "cancel":
                with self._lock:
                    event = self.cancels.get(msg["id"])
                if event is not None:
                    event.set()
                continue
            with self._lock:
                self.cancels[msg["id"]] = threading.Event()
            self.jobs.put(msg)
        os._exit(0)

    def serve(self, handler: Handler) -> None:
        while True:
            msg = self.jobs.get()
            with self._lock:
                cancel = self.cancels.get(msg["id"]) or threading.Event()
            call_id = msg["id"]

            def emit(part: Message, call_id: int = call_id) -> None:
                self.send({"id": call_id, **part})

            try:
                end = handler.handle(msg, emit, cancel)
            except Exception as exc:  # a handler's bug must still end the request, with its reason
                log.debug("handler failed", exc_info=True)
                end = {"end": "error", "status": 500,
                       "error": {"code": "generation-failed", "message": f"{type(exc).__name__}: {exc}", "hint": ""}}
            with self._lock:
                self.cancels.pop(call_id, None)
            self.send({"id": call_id, **end})


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m qwenhome.app.workers.main")
    p.add_argument("--fd", type=int, required=True, help="this end of the socket pair to the API")
    args = p.parse_args(argv)
    # Ctrl+C in a terminal reaches the whole process group: stopping the
    # worker is the API's decision (it closes the socket).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker = Worker(Channel(socket.socket(fileno=args.fd)))
    init = worker.channel.recv()
    if init is None:
        return 0
    threading.Thread(target=worker.read, name="qwenhome-worker-reader", daemon=True).start()
    try:
        _set_threads(int(init.get("threads", 0)))
        handler = load_handler(init)
    except QwenhomeError as exc:
        worker.send({"event": "failed", "error": exc.to_dict()})
        return EXIT_LOAD_FAILED
    except Exception as exc:  # an engine's own failure, shown rather than swallowed
        err = QwenhomeError(f"the {init['kind']} engine failed to load: {type(exc).__name__}: {exc}",
                            code="engine-load-failed")
        worker.send({"event": "failed", "error": err.to_dict()})
        return EXIT_LOAD_FAILED
    # Loading (importing torch, transformers, diffusers: 7-8 CPU s here) runs at
    # the API's priority: at nice 10 beside one busy process it got a tenth of
    # the core (start to ready 167 s against 27 s). Generation yields to the API.
    _lower_priority(int(init.get("nice", 0)))
    worker.send({"event": "ready", "info": handler.info()})
    worker.serve(handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
