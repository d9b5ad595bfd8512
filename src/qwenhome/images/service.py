"""The image service: validation, the job queue, the engine and the result store.

    service = ImageService(settings, snapshot_path)      # nothing heavy yet
    service.start()      # worker thread: decide the policy, load the pipeline, run jobs
    job = service.submit(service.make_request(prompt="a fox", size="16:9", steps=30))
    ...
    service.stop()

``start()`` returns at once; the model loads on the worker thread, so a web
server starts answering while a 40 GB pipeline is still being read. Jobs
submitted meanwhile wait in the queue. ``status()`` says what is happening.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import secrets
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import Settings
from ..demo.labels import demo_label
from ..errors import QwenhomeError
from .engine import Cancelled, ImageEngine
from .errors import ImageModelError, ImageRequestError
from .jobs import CANCELLED, FAILED, SUCCEEDED, ImageRequest, Job, JobQueue
from .policy import Policy, decide_policy, model_footprint, probe_hardware
from .results import ResultStore, encode_png, image_url
from .sizes import NATIVE_BASE, SizeRules
from .tiny import HINTS_FILE
from .uploads import Upload

log = logging.getLogger("qwenhome.images.service")

MAX_N = 4
MAX_STEPS = 150
MAX_PROMPT_CHARS = 4000
SEED_LIMIT = 2**32


def _vae_multiple(snapshot: Path) -> int:
    """``vae_scale_factor * 2`` from the VAE config, as the pipeline computes it."""
    try:
        config = json.loads((snapshot / "vae" / "config.json").read_text(encoding="utf-8"))
        return int(2 ** len(config["temperal_downsample"]) * 2)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageModelError(
            f"{snapshot} has no readable vae/config.json: it is not a Qwen-Image snapshot",
            snapshot=snapshot,
        ) from exc


def _preset_base(snapshot: Path) -> int:
    try:
        hints = json.loads((snapshot / HINTS_FILE).read_text(encoding="utf-8"))
        return int(hints["images"]["preset_base"])
    except (OSError, ValueError, KeyError, TypeError):
        return NATIVE_BASE


def _lower_thread_priority(nice: int) -> None:
    """Run generation below the web server's priority so the API stays responsive.

    On Linux the nice value is per thread, and threads this worker creates (the
    torch/OpenMP compute pool) inherit it; elsewhere this does nothing."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (OSError, AttributeError):
        pass


class ImageService:
    """Everything the image API needs. Thread-safe; one generation at a time."""

    def __init__(
        self,
        settings: Settings,
        snapshot_path: Path,
        policy: Policy | None = None,
        *,
        model: str = "",
        preset_base: int | None = None,
        max_queue: int = 16,
        default_steps: int | None = None,
        worker_nice: int = 10,
    ) -> None:
        self.settings = settings
        self.snapshot = Path(snapshot_path)
        self.model = model or self.snapshot.name
        # In the hub cache a snapshot folder is named by its commit.
        self.commit = self.snapshot.name
        self.rules = SizeRules.for_model(_vae_multiple(self.snapshot), preset_base or _preset_base(self.snapshot))
        self.default_steps = default_steps or (50 if self.rules.presets["1:1"][0] >= NATIVE_BASE else 20)
        self.results = ResultStore(settings.state_dir / "images")
        # Uploads are spooled here while they arrive (same filesystem as the home).
        self.uploads_dir = settings.state_dir / "tmp" / "uploads"
        self.policy = policy
        self.worker_nice = worker_nice
        self.state = "stopped"
        self.error: dict[str, Any] | None = None
        self._engine: ImageEngine | None = None
        self._ready = threading.Event()
        self._queue = JobQueue(self._run, max_pending=max_queue, before_first=self._load)

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        """Start the worker (it loads the model first). Idempotent."""
        if self.state == "stopped":
            self.state = "loading"
            self._drop_stale_uploads()
            self._queue.start()

    def stop(self) -> None:
        """Cancel queued and running jobs and stop the worker. Idempotent."""
        if self.state != "stopped":
            self._queue.stop()
            self.state = "stopped"

    def _drop_stale_uploads(self) -> None:
        # Left by a server that stopped while a request was arriving.
        for path in self.uploads_dir.glob("*.upload"):
            try:
                path.unlink()
            except OSError:
                log.debug("cannot remove the stale upload %s", path, exc_info=True)

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def _load(self) -> None:
        _lower_thread_priority(self.worker_nice)
        try:
            if self.policy is None:
                self.policy = decide_policy(probe_hardware(), model_footprint(self.snapshot))
            self._engine = ImageEngine(self.snapshot, self.policy)
            self._engine.load()
            # Everything loaded so far lives as long as the process; freezing it
            # keeps full garbage collections (which stop every thread, the web
            # server's included) short while images are generated.
            gc.freeze()
            if self.state == "loading":  # not if stop() came first
                self.state = "ready"
        except QwenhomeError as exc:
            self.state, self.error = "failed", exc.to_dict()
        except Exception as exc:  # any failure must reach status and jobs, not kill the worker
            self.state = "failed"
            self.error = ImageModelError(f"the image engine failed to start: {type(exc).__name__}: {exc}").to_dict()
        finally:
            self._ready.set()

    def status(self) -> dict[str, Any]:
        current = self._queue.current
        return {
            "state": self.state,
            "error": self.error,
            "model": self.model,
            **demo_label(self.model),  # {"demo": true, "note"} for the demo's model
            "commit": self.commit,
            "policy": self.policy.to_dict() if self.policy else None,
            "queue": {"pending": self._queue.pending(), "running": current.id if current else None},
            "sizes": self.rules.to_dict(),
            "default_steps": self.default_steps,
        }

    # -- requests ----------------------------------------------------------------
    def make_request(
        self,
        *,
        prompt: str,
        n: int = 1,
        size: str | None = None,
        steps: int | None = None,
        negative_prompt: str | None = None,
        true_cfg_scale: float = 4.0,
        seed: int | None = None,
        image: Upload | None = None,
        mask: Upload | None = None,
        strength: float = 0.6,
    ) -> ImageRequest:
        """Validate everything a client sent; raise a clear error for the first problem."""
        if not prompt or not prompt.strip():
            raise ImageRequestError("the prompt is empty", hint="describe the image to generate")
        if len(prompt) > MAX_PROMPT_CHARS or len(negative_prompt or "") > MAX_PROMPT_CHARS:
            raise ImageRequestError(f"prompts are limited to {MAX_PROMPT_CHARS} characters")
        if not 1 <= n <= MAX_N:
            raise ImageRequestError(f"n must be between 1 and {MAX_N}, not {n}", hint="request more images in another job")
        steps = self.default_steps if steps is None else steps
        if not 1 <= steps <= MAX_STEPS:
            raise ImageRequestError(f"num_inference_steps must be between 1 and {MAX_STEPS}, not {steps}")
        if not 1.0 <= true_cfg_scale <= 20.0:
            raise ImageRequestError(
                f"true_cfg_scale must be between 1 and 20, not {true_cfg_scale}",
                hint="1 disables classifier-free guidance; Qwen-Image's default is 4",
            )
        if seed is None:
            seed = secrets.randbelow(SEED_LIMIT - MAX_N)
        elif not 0 <= seed < SEED_LIMIT - MAX_N:
            raise ImageRequestError(f"seed must be between 0 and {SEED_LIMIT - MAX_N - 1}, not {seed}")
        mode = "text"
        if image is not None:
            mode = "inpaint" if mask is not None else "img2img"
            if not 0.0 < strength <= 1.0:
                raise ImageRequestError(f"strength must be in (0, 1], not {strength}")
            if mask is not None and (mask.width, mask.height) != (image.width, image.height):
                raise ImageRequestError(
                    f"the mask is {mask.width}x{mask.height} but the image is {image.width}x{image.height}",
                    hint="upload a mask of the same size as the image",
                )
        elif mask is not None:
            raise ImageRequestError("a mask needs an image", hint="send 'image' with the 'mask'")
        if image is not None and (size is None or size.strip() == "auto"):
            width, height = self.rules.nearest(image.width, image.height)
        else:
            width, height = self.rules.resolve(size)
        return ImageRequest(
            prompt=prompt,
            width=width,
            height=height,
            steps=steps,
            seed=seed,
            n=n,
            negative_prompt=negative_prompt or None,
            true_cfg_scale=true_cfg_scale,
            mode=mode,
            strength=strength if mode != "text" else None,
            image=image.png if image else None,
            mask=mask.png if mask else None,
        )

    def submit(self, request: ImageRequest) -> Job:
        return self._queue.submit(request)

    def get(self, job_id: str) -> Job:
        return self._queue.get(job_id)

    def cancel(self, job_id: str) -> Job:
        job = self._queue.cancel(job_id)
        if job.state == CANCELLED and job.request.image is not None:  # never started: drop the uploads
            job.request = replace(job.request, image=None, mask=None)
        return job

    # -- the worker --------------------------------------------------------------
    def _params(self, job: Job) -> dict[str, Any]:
        req = job.request
        return {
            **req.params(),
            "model": self.model,
            "model_commit": self.commit,
            "device": self.policy.device if self.policy else None,
            "dtype": self.policy.dtype if self.policy else None,
        }

    def _run(self, job: Job) -> None:
        try:
            self._generate(job)
        finally:
            # Finished jobs stay listed for a while; the uploads they carried
            # (up to 32 MiB each) are on disk with the results, not needed here.
            if job.request.image is not None:
                job.request = replace(job.request, image=None, mask=None)

    def _generate(self, job: Job) -> None:
        req = job.request
        if self._engine is None or self.state != "ready":
            job.error = self.error or {"code": "image-model-invalid", "message": "the image model is not loaded"}
            job.set_state(FAILED, error=job.error)
            return
        engine = self._engine
        base = self._params(job)
        pngs: list[bytes] = []
        images_meta: list[dict[str, Any]] = []
        done = [0]  # steps of the images finished before the current one
        try:
            for index, seed in enumerate(req.seeds()):
                if job.cancel_requested.is_set():
                    raise Cancelled()

                def on_step(step: int, per_image: int, index: int = index) -> None:
                    job.step = done[0] + step
                    job.emit(
                        "step", step=job.step, total=per_image * req.n,
                        image=index, image_step=step, image_steps=per_image,
                    )
                    # Checked after each step: a running job stops within one step.
                    if job.cancel_requested.is_set():
                        raise Cancelled()

                started = time.monotonic()
                image = engine.generate(req, seed, on_step)
                done[0] = job.step
                # What reproduces this one image alone; embedded in the PNG.
                own = {**base, "n": 1, "seed": seed}
                pngs.append(encode_png(image, own))
                images_meta.append({"name": f"{index}.png", "seed": seed, "seconds": round(time.monotonic() - started, 3)})
                job.emit("image", index=index, seed=seed)
            extra = {"input.png": req.image} if req.image else {}
            if req.mask:
                extra["mask.png"] = req.mask
            record = {
                **base,
                "images": images_meta,
                "created": job.created,
                "finished": time.time(),
                "reproduce": [
                    {**req.params(), "n": 1, "seed": m["seed"]} for m in images_meta
                ],
            }
            job.images = self.results.save(job.id, pngs, record, extra)
            job.set_state(
                SUCCEEDED, images=[{"name": n, "url": image_url(job.id, n)} for n in job.images]
            )
        except Cancelled:
            job.set_state(CANCELLED, step=job.step)
        except QwenhomeError as exc:
            job.error = exc.to_dict()
            job.set_state(FAILED, error=job.error)
        except Exception as exc:  # the worker must survive any one job
            job.error = {"code": "image-generation-failed", "message": f"{type(exc).__name__}: {exc}"}
            job.set_state(FAILED, error=job.error)
