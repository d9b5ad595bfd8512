"""What the API says about a demo model, so the page can say it too.

The demo's models are stand-ins built on this machine: the chat model knows a
handful of answers, the image model has random weights and draws noise. A
user who sees noise must be told it is the model, not a fault. Models are
known by their repository ids, which only the demo writes.
"""

from __future__ import annotations

from typing import Any

from .flow import DEMO_REPO

# Kept in step with qwenhome.images.tiny.TINY_REPO_ID (a test checks), without importing the images package.
DEMO_IMAGE_REPO = "qwenhome/tiny-qwen-image-demo"

NOTES = {
    DEMO_REPO: "demo model: a tiny Qwen2 trained here in seconds; it knows a handful of answers and "
               "nothing else (launch without --demo for Qwen2.5)",
    DEMO_IMAGE_REPO: "demo model: random weights, so every image is noise; it shows the image path works "
                     "(qwenhome pull Qwen/Qwen-Image for real images)",
}


def demo_label(repo: str | None) -> dict[str, Any]:
    """``{"demo": True, "note": …}`` for a demo model (``repo`` may carry ``@rev``), else ``{}``:
    merged into the API's descriptions of a model."""
    note = NOTES.get((repo or "").split("@")[0])
    return {"demo": True, "note": note} if note else {}
