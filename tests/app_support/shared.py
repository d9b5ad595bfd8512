"""One API server over the tiny model, shared by every test in the process.

Its home got the model the way users get it: the demo flow serves the built
folder from a local mirror and pulls it through the real pull path.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from qwenhome.app.server import create_app
from qwenhome.app.state import AppState
from qwenhome.config import Settings, load_settings
from qwenhome.demo import DEMO_REPO, ensure_demo_model

from .servers import serve_app, wait_ready
from .tiny import seed_demo_repos


@dataclass(frozen=True)
class SharedServer:
    url: str
    settings: Settings
    snapshot: Path
    state: AppState


_lock = threading.Lock()
_server: SharedServer | None = None


def shared_server() -> SharedServer:
    global _server
    with _lock:
        if _server is None:
            home = Path(tempfile.mkdtemp(prefix="qwenhome-app-home-"))
            settings = load_settings({}, home=str(home))
            seed_demo_repos(home)
            snap = ensure_demo_model(settings)
            state = AppState(settings, DEMO_REPO, snapshot=snap)
            stack = contextlib.ExitStack()
            url = stack.enter_context(serve_app(create_app(state)))
            atexit.register(shutil.rmtree, home, True)
            atexit.register(stack.close)
            wait_ready(url)
            _server = SharedServer(url, settings, snap, state)
        return _server
