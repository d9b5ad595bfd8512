"""The real app (qwenhome.app.server) with no chat engine and the images
extension found in the home. ``python -m tests.images_support.realapp HOME PORT``."""

from __future__ import annotations

import sys
from pathlib import Path

from qwenhome.app.server import create_app
from qwenhome.app.state import AppState
from qwenhome.config import load_settings
from qwenhome.images.app import extension

if __name__ == "__main__":
    import uvicorn

    home, port = Path(sys.argv[1]), int(sys.argv[2])
    settings = load_settings({"QWEN_HOME": str(home)}).with_offline(True)
    ext = extension(settings)
    if ext is None:
        sys.exit("no image model in the home")
    app = create_app(AppState(settings, "qwenhome/no-chat-model", extensions=(ext,)), load_engine=False)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
