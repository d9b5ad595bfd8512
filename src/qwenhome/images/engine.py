"""The diffusers engine: Qwen-Image pipelines loaded from a snapshot in the home.

Loading is offline by construction: ``from_pretrained`` gets a local snapshot
directory and ``local_files_only=True``, so nothing can reach a hub. The
text-to-image pipeline is loaded once; the image-to-image and inpaint pipelines
are built from it with ``from_pipe`` (same weights in memory, no second load).

diffusers and torch are imported here, inside functions, so that importing
``qwenhome.images`` stays cheap and works without the ``images`` extra. Every
third-party error is translated into qwenhome's tree at this boundary.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import QwenhomeError
from .errors import ImageEngineError, ImageModelError
from .jobs import ImageRequest
from .policy import Policy

StepCallback = Callable[[int, int], None]  # (step within this image, 1-based; steps of this image)


class GenerationCancelled(Exception):
    """Raised from the step callback to stop a pipeline between two steps."""


def import_diffusers() -> Any:
    try:
        import diffusers
    except ImportError as exc:
        raise ImageModelError(
            "image generation needs diffusers, which is not installed",
            code="image-engine-missing",
            hint="install the images extra: pip install 'qwenhome[images]'",
        ) from exc
    return diffusers


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def quiet_progress_bars() -> None:
    """The library does not print: diffusers' and transformers' loading bars
    would land in the server's log (both switches are process-wide)."""
    import_diffusers().utils.logging.disable_progress_bar()
    transformers: Any = importlib.import_module("transformers")
    transformers.utils.logging.disable_progress_bar()


def _pil_from_png(data: bytes, mode: str) -> Any:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.convert(mode)


class ImageEngine:
    """Holds the loaded pipelines. Called from one thread at a time (the job worker)."""

    def __init__(self, snapshot: Path, policy: Policy) -> None:
        self.snapshot = Path(snapshot)
        self.policy = policy
        self._pipes: dict[str, Any] = {}

    @property
    def loaded(self) -> bool:
        return "text" in self._pipes

    def load(self) -> None:
        diffusers = import_diffusers()
        import torch

        dtype = getattr(torch, self.policy.dtype)
        quiet_progress_bars()
        # diffusers renamed torch_dtype to dtype (0.42 warns about the old
        # name); the images extra allows older releases that know only the old one.
        dtype_arg = "dtype" if _version(diffusers.__version__) >= (0, 42) else "torch_dtype"
        try:
            pipe = diffusers.QwenImagePipeline.from_pretrained(
                str(self.snapshot), local_files_only=True, **{dtype_arg: dtype}
            )
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ImageModelError(
                f"cannot load a Qwen-Image pipeline from {self.snapshot}: {exc}",
                snapshot=self.snapshot,
            ) from exc
        self._pipes["text"] = self._place(pipe)

    def _place(self, pipe: Any) -> Any:
        pipe.set_progress_bar_config(disable=True)
        if self.policy.offload == "model":
            pipe.enable_model_cpu_offload()
        elif self.policy.offload == "sequential":
            pipe.enable_sequential_cpu_offload()
        else:
            pipe.to(self.policy.device)
        return pipe

    def _pipeline(self, mode: str) -> Any:
        if mode not in self._pipes:
            diffusers = import_diffusers()
            cls = {"img2img": diffusers.QwenImageImg2ImgPipeline, "inpaint": diffusers.QwenImageInpaintPipeline}[mode]
            # from_pipe shares the loaded modules; offload hooks belong to one
            # pipeline, so an offloaded one gets its own.
            derived = cls.from_pipe(self._pipes["text"])
            self._pipes[mode] = self._place(derived) if self.policy.offload != "none" else derived
            self._pipes[mode].set_progress_bar_config(disable=True)
        return self._pipes[mode]

    def generate(self, req: ImageRequest, seed: int, on_step: StepCallback) -> Any:
        """One image (PIL) for ``req`` from ``seed``. ``on_step`` may raise :class:`GenerationCancelled`."""
        import torch

        if not self.loaded:
            self.load()
        pipe = self._pipeline(req.mode)

        def callback(p: Any, i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            on_step(i + 1, int(p.num_timesteps))
            return {}

        args: dict[str, Any] = {
            "prompt": req.prompt,
            "negative_prompt": req.negative_prompt or None,
            "true_cfg_scale": req.true_cfg_scale,
            "width": req.width,
            "height": req.height,
            "num_inference_steps": req.steps,
            # A CPU generator gives the same noise on every device, so a seed
            # reproduces an image whatever the policy placed it on.
            "generator": torch.Generator(device="cpu").manual_seed(seed),
            "callback_on_step_end": callback,
        }
        if req.mode != "text":
            args["image"] = _pil_from_png(req.image or b"", "RGB")
            args["strength"] = req.strength
        if req.mode == "inpaint":
            args["mask_image"] = _pil_from_png(req.mask or b"", "L")
        try:
            return pipe(**args).images[0]
        except (GenerationCancelled, QwenhomeError):
            raise
        except (torch.OutOfMemoryError, MemoryError) as exc:
            raise _out_of_memory(req) from exc
        except RuntimeError as exc:
            # On the CPU torch says so in a plain RuntimeError from its allocator.
            if CPU_OOM_TEXT in str(exc):
                raise _out_of_memory(req) from exc
            raise ImageEngineError(f"generation failed: {exc}") from exc
        except (ValueError, TypeError, IndexError) as exc:
            raise ImageEngineError(f"generation failed: {exc}") from exc


CPU_OOM_TEXT = "can't allocate memory"  # torch's DefaultCPUAllocator


def _out_of_memory(req: ImageRequest) -> ImageEngineError:
    return ImageEngineError(
        f"out of memory generating {req.width}x{req.height}",
        code="out-of-memory",
        hint="choose a smaller size, or restart with more offload (the policy is shown at GET /api/images/status)",
    )
