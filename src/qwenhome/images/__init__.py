"""Image generation with Qwen-Image from the home (diffusers, offline).

Public surface (importing this package imports neither torch nor diffusers nor
FastAPI; those load when an engine starts or the router is made):

    ImageService(settings, snapshot_path, policy=None)   .start() / .stop()
    make_router(service) -> fastapi.APIRouter             (qwenhome.images.api)
    build_tiny_qwenimage(dest_dir) -> Path                (qwenhome.images.tiny)
    decide_policy / probe_hardware / model_footprint      (qwenhome.images.policy)
    SizeRules, QWEN_IMAGE_PRESETS                         (qwenhome.images.sizes)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ImageEngineError,
    ImageModelError,
    ImageRequestError,
    ImageSizeError,
    InvalidImageError,
    JobNotFoundError,
    QueueFullError,
)
from .jobs import ImageRequest, Job
from .policy import Footprint, Hardware, Policy, decide_policy, model_footprint, probe_hardware
from .service import ImageService
from .sizes import QWEN_IMAGE_PRESETS, SizeRules
from .tiny import TINY_REPO_ID, build_tiny_qwenimage

if TYPE_CHECKING:
    from .api import make_router

__all__ = [
    "QWEN_IMAGE_PRESETS",
    "TINY_REPO_ID",
    "Footprint",
    "Hardware",
    "ImageEngineError",
    "ImageModelError",
    "ImageRequest",
    "ImageRequestError",
    "ImageService",
    "ImageSizeError",
    "InvalidImageError",
    "Job",
    "JobNotFoundError",
    "Policy",
    "QueueFullError",
    "SizeRules",
    "build_tiny_qwenimage",
    "decide_policy",
    "make_router",
    "model_footprint",
    "probe_hardware",
]


def __getattr__(name: str) -> Any:
    # FastAPI is the app extra's; load it only when the router is asked for.
    if name == "make_router":
        from .api import make_router

        return make_router
    raise AttributeError(name)
