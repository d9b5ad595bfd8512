"""The image service: validation, the job queue, the worker and the result store.

    service = ImageService(settings, snapshot_path)      # nothing heavy yet (None: no model until switch())
    service.start()      # the worker process starts: it decides the policy and loads the pipeline
    job = service.submit(service.make_request(prompt="a fox", size="16:9", steps=30))
    ...
    service.switch("Org/Other", other_snapshot)          # another model, without a restart
    service.stop()

``start()`` returns at once; the model loads in the worker process, so a web
server answers while a 40 GB pipeline is still being read, and whatever the
worker computes, this process only waits for its messages. Jobs submitted
meanwhile wait in the queue. ``status()`` says what is happening.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..app.errors import ApiError
from ..app.workers.process import READY, STOPPED, WorkerOptions, WorkerProcess, WorkerSpec
from ..config import Settings
from ..demo.labels import demo_label
from ..errors import QwenhomeError
from .engine import GenerationCancelled
from .errors import ImageModelError, ImageRequestError
from .jobs import CANCELLED, FAILED, SUCCEEDED, ImageRequest, Job, JobQueue
from .policy import Policy
from .results import ResultStore, image_url
from .sizes import NATIVE_BASE, SizeRules
from .tiny import HINTS_FILE
from .uploads import Upload
from .worker import render

log = logging.getLogger("qwenhome.images.service")

MAX_N = 4
MAX_STEPS = 150
MAX_PROMPT_CHARS = 4000
SEED_LIMIT = 2**32
DEFAULT_READY_WAIT = 60.0  # seconds a request waits for a model that loads or restarts


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


class ImageService:
    """Everything the image API needs. Thread-safe; one generation at a time."""

    kind = "image"

    def __init__(
        self,
        settings: Settings,
        snapshot_path: Path | None,
        policy: Policy | None = None,
        *,
        model: str = "",
        preset_base: int | None = None,
        max_queue: int = 16,
        default_steps: int | None = None,
        workers: WorkerOptions | None = None,
        ready_wait: float = DEFAULT_READY_WAIT,
    ) -> None:
        """``policy``: force a device policy (else the worker decides from the
        hardware); ``ready_wait``: how long an API request waits for the model."""
        self.settings = settings
        self.results = ResultStore(settings.state_dir / "images")
        # Uploads are spooled here while they arrive (same filesystem as the home).
        self.uploads_dir = settings.state_dir / "tmp" / "uploads"
        self.forced_policy = policy
        self.workers = workers or WorkerOptions()
        self.ready_wait = ready_wait
        self._preset_base = preset_base
        self._default_steps = default_steps
        self._started = False
        self._stopping = threading.Event()
        self._switch_lock = threading.Lock()
        self.snapshot: Path | None = None
        self.model = ""
        self.commit: str | None = None
        self.rules: SizeRules | None = None
        self.default_steps: int | None = None
        self._worker = None if snapshot_path is None else self._make_worker(Path(snapshot_path), model)
        self._queue = JobQueue(self._run, max_pending=max_queue, before_each=self._wait_for_engine)

    def _make_worker(self, snapshot: Path, model: str) -> WorkerProcess:
        """The worker for ``snapshot`` (not started), after reading the sizes it takes."""
        rules = SizeRules.for_model(_vae_multiple(snapshot), self._preset_base or _preset_base(snapshot))
        self.snapshot = snapshot
        self.model = model or snapshot.name
        # In the hub cache a snapshot folder is named by its commit.
        self.commit = snapshot.name
        self.rules = rules
        self.default_steps = self._default_steps or (50 if rules.presets["1:1"][0] >= NATIVE_BASE else 20)
        options = {"policy": self.forced_policy.to_dict()} if self.forced_policy else {}
        return WorkerProcess(WorkerSpec("image", self.model, snapshot, options), self.workers)

    # -- lifecycle ---------------------------------------------------------------
    @property
    def state(self) -> str:
        """``none`` (no model), ``stopped``, ``loading``, ``ready``, ``restarting`` or ``failed``."""
        return "none" if self._worker is None else self._worker.state

    @property
    def error(self) -> dict[str, Any] | None:
        err = self._worker.error if self._worker is not None else None
        return err.to_dict() if err is not None and self.state == "failed" else None

    @property
    def policy(self) -> Policy | None:
        found = self._worker.info.get("policy") if self._worker is not None else None
        return Policy(**found) if found else self.forced_policy

    def start(self) -> None:
        """Start the worker (it loads the model first) and the queue. Idempotent."""
        if not self._started:
            self._started = True
            self._stopping.clear()
            self._drop_stale_uploads()
            if self._worker is not None:
                self._worker.start()
            self._queue.start()

    def stop(self) -> None:
        """Cancel queued and running jobs and stop the worker. Idempotent."""
        if self._started:
            self._stopping.set()
            self._queue.stop()
            if self._worker is not None:
                self._worker.stop()
            self._started = False

    def switch(self, model: str, snapshot: Path) -> None:
        """Serve another model: its worker starts loading, the old one stops
        (a job it was making ends with ``model-switched``); queued jobs wait
        for the new one."""
        with self._switch_lock:
            old = self._worker
            if old is not None and old.model == model and self.snapshot == snapshot \
                    and old.state not in ("failed", STOPPED):
                return
            self._worker = self._make_worker(snapshot, model)
            if self._started:
                self._worker.start()
        if old is not None:
            old.stop(ApiError(409, f"the served image model changed from {old.model} to {model}",
                              code="model-switched", hint="submit the job again"))

    def _drop_stale_uploads(self) -> None:
        # Left by a server that stopped while a request was arriving.
        for path in self.uploads_dir.glob("*.upload"):
            try:
                path.unlink()
            except OSError:
                log.debug("cannot remove the stale upload %s", path, exc_info=True)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the model is loaded or failed (True), or ``timeout`` passed."""
        return self.wait_settled(timeout)

    def wait_settled(self, timeout: float | None = None) -> bool:
        return True if self._worker is None else self._worker.wait_settled(timeout)

    async def until_ready(self, timeout: float) -> bool:
        return False if self._worker is None else await self._worker.until_ready(timeout)

    def unavailable(self) -> QwenhomeError:
        if self._worker is None:
            return ApiError(503, "no image model is served", code="no-image-model",
                            hint="pull one (e.g. Qwen/Qwen-Image) in the Models panel and serve it, "
                                 'or POST /api/served {"image": "Org/Name"}')
        return self._worker.unavailable()

    def _wait_for_engine(self) -> None:
        # A job starts once the current worker is ready (or failed: the job fails with why).
        while not self._stopping.is_set():
            worker = self._worker
            if worker is not None and worker.wait_settled(0.2) and worker is self._worker:
                return
            if worker is None:
                time.sleep(0.2)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "image", "model": "", "state": "none"} if self._worker is None \
            else self._worker.describe()
        current = self._queue.current
        out["queue"] = {"pending": self._queue.pending(), "running": current.id if current else None}
        return out

    def status(self) -> dict[str, Any]:
        current = self._queue.current
        worker = self._worker
        policy = self.policy
        return {
            "state": self.state,
            "error": self.error,
            "model": self.model or None,
            **demo_label(self.model),  # {"demo": true, "note"} for the demo's model
            "commit": self.commit,
            "policy": policy.to_dict() if policy else None,
            "queue": {"pending": self._queue.pending(), "running": current.id if current else None},
            "sizes": self.rules.to_dict() if self.rules else None,
            "default_steps": self.default_steps,
            "worker": None if worker is None else
            {"pid": worker.pid, "restarts": worker.restarts, "last_exit": worker.last_exit or None},
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
        rules, default_steps = self.rules, self.default_steps
        if rules is None or default_steps is None:
            raise self.unavailable()
        if not prompt or not prompt.strip():
            raise ImageRequestError("the prompt is empty", hint="describe the image to generate")
        if len(prompt) > MAX_PROMPT_CHARS or len(negative_prompt or "") > MAX_PROMPT_CHARS:
            raise ImageRequestError(f"prompts are limited to {MAX_PROMPT_CHARS} characters")
        if not 1 <= n <= MAX_N:
            raise ImageRequestError(f"n must be between 1 and {MAX_N}, not {n}", hint="request more images in another job")
        steps = default_steps if steps is None else steps
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
            width, height = rules.nearest(image.width, image.height)
        else:
            width, height = rules.resolve(size)
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
        policy = self.policy
        return {
            **req.params(),
            "model": self.model,
            "model_commit": self.commit,
            "device": policy.device if policy else None,
            "dtype": policy.dtype if policy else None,
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
        worker = self._worker
        if worker is None or worker.state != READY:
            job.error = self.unavailable().to_dict()
            job.set_state(FAILED, error=job.error)
            return
        base = self._params(job)
        pngs: list[bytes] = []
        images_meta: list[dict[str, Any]] = []
        done = [0]  # steps of the images finished before the current one
        try:
            for index, seed in enumerate(req.seeds()):
                if job.cancel_requested.is_set():
                    raise GenerationCancelled()

                def on_step(step: int, per_image: int, index: int = index) -> None:
                    job.step = done[0] + step
                    job.emit(
                        "step", step=job.step, total=per_image * req.n,
                        image=index, image_step=step, image_steps=per_image,
                    )

                started = time.monotonic()
                # What reproduces this one image alone; embedded in the PNG.
                own = {**base, "n": 1, "seed": seed}
                pngs.append(render(worker, req, seed, own, on_step, job.cancel_requested))
                done[0] = job.step
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
        except GenerationCancelled:
            job.set_state(CANCELLED, step=job.step)
        except QwenhomeError as exc:
            job.error = exc.to_dict()
            job.set_state(FAILED, error=job.error)
        except Exception as exc:  # the queue must survive any one job
            job.error = {"code": "image-generation-failed", "message": f"{type(exc).__name__}: {exc}"}
            job.set_state(FAILED, error=job.error)
