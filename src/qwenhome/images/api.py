"""The image API as a FastAPI router: parse, call :class:`ImageService`, render.

    POST /v1/images/generations     OpenAI-compatible; waits for the job (JSON body)
    POST /v1/images/edits           OpenAI-compatible image-to-image / inpaint (multipart upload)
    POST /api/images/jobs           start a text-to-image job, answer 202 at once (JSON body)
    POST /api/images/edit-jobs      start an img2img / inpaint job (multipart: image, mask?, fields)
    GET  /api/images/status         model, device policy, queue, sizes and presets
    GET  /api/images                stored results with their parameters, newest first
    GET  /api/images/{job}/{n}.png  one stored image
    GET  /api/jobs/{id}             a job's state and progress
    GET  /api/jobs/{id}/events      server-sent events: queued, started, step…, image, terminal
    POST /api/jobs/{id}/cancel      cancel (also DELETE /api/jobs/{id})

Errors answer like the rest of the app, ``{"error": {"code", "message", "hint",
"type"}}``, with the status from :func:`qwenhome.images.errors.http_status`. Nothing here blocks the event loop:
generation runs on the service's worker thread and waiting is ``await``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ..app.errors import error_body
from ..errors import QwenhomeError
from .errors import http_status
from .jobs import SUCCEEDED, Job
from .results import image_url
from .service import ImageService
from .uploads import read_upload


class GenerationBody(BaseModel):
    """OpenAI's image generation request, plus Qwen-Image's own parameters."""

    prompt: str
    n: int = 1
    size: str | None = None
    response_format: Literal["b64_json", "url"] = "url"
    model: str | None = None
    negative_prompt: str | None = None
    num_inference_steps: int | None = Field(default=None)
    true_cfg_scale: float = 4.0
    seed: int | None = None


class _ErrorRoute(APIRoute):
    """Renders qwenhome errors raised by this router's endpoints as JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except QwenhomeError as exc:
                status = http_status(exc)
                return JSONResponse(error_body(exc, status), status_code=status)

        return route


def _openai_result(request: Request, job: Job, service: ImageService, response_format: str) -> Response:
    if job.state != SUCCEEDED:
        error = dict(job.error or {"code": f"job-{job.state}", "message": f"the image job was {job.state}"})
        failed = job.state == "failed"
        error.setdefault("type", "server_error" if failed else "invalid_request_error")
        return JSONResponse({"error": error}, status_code=500 if failed else 409,
                            headers={"X-Qwenhome-Job": job.id})
    data: list[dict[str, Any]] = []
    base = str(request.base_url).rstrip("/")
    for name in job.images:
        if response_format == "b64_json":
            raw = service.results.file(job.id, name).read_bytes()
            data.append({"b64_json": base64.b64encode(raw).decode("ascii")})
        else:
            data.append({"url": base + image_url(job.id, name)})
    return JSONResponse(
        {"created": int(job.created), "data": data, "job": job.id},
        headers={"X-Qwenhome-Job": job.id},
    )


def make_router(service: ImageService, *, manage_service: bool = True) -> APIRouter:
    """The image routes over ``service``: ``app.include_router(make_router(service))``.

    With ``manage_service`` the router's lifespan (which FastAPI merges into the
    app's on ``include_router``) starts the service at startup and stops it at
    shutdown, so mounting is the whole integration."""

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        if manage_service:
            service.start()
        try:
            yield
        finally:
            if manage_service:
                await run_in_threadpool(service.stop)

    router = APIRouter(route_class=_ErrorRoute, tags=["images"], lifespan=lifespan)

    def submit_json(body: GenerationBody) -> Job:
        return service.submit(
            service.make_request(
                prompt=body.prompt, n=body.n, size=body.size, steps=body.num_inference_steps,
                negative_prompt=body.negative_prompt, true_cfg_scale=body.true_cfg_scale, seed=body.seed,
            )
        )

    async def submit_upload(
        image: UploadFile, mask: UploadFile | None, prompt: str, n: int, size: str | None,
        steps: int | None, negative_prompt: str | None, true_cfg_scale: float, seed: int | None,
        strength: float,
    ) -> Job:
        img = read_upload(await image.read(), "image")
        msk = read_upload(await mask.read(), "mask", mask=True) if mask is not None else None
        return service.submit(
            service.make_request(
                prompt=prompt, n=n, size=size, steps=steps, negative_prompt=negative_prompt,
                true_cfg_scale=true_cfg_scale, seed=seed, image=img, mask=msk, strength=strength,
            )
        )

    @router.post("/v1/images/generations")
    async def openai_generations(body: GenerationBody, request: Request) -> Response:
        job = submit_json(body)
        await job.wait()
        return _openai_result(request, job, service, body.response_format)

    @router.post("/v1/images/edits")
    async def openai_edits(
        request: Request,
        image: UploadFile = File(...),
        prompt: str = Form(...),
        mask: UploadFile | None = File(None),
        n: int = Form(1),
        size: str | None = Form(None),
        response_format: Literal["b64_json", "url"] = Form("url"),
        negative_prompt: str | None = Form(None),
        num_inference_steps: int | None = Form(None),
        true_cfg_scale: float = Form(4.0),
        seed: int | None = Form(None),
        strength: float = Form(0.6),
    ) -> Response:
        job = await submit_upload(image, mask, prompt, n, size, num_inference_steps, negative_prompt,
                                  true_cfg_scale, seed, strength)
        await job.wait()
        return _openai_result(request, job, service, response_format)

    @router.post("/api/images/jobs", status_code=202)
    async def start_job(body: GenerationBody) -> dict[str, Any]:
        return submit_json(body).to_dict(image_url)

    @router.post("/api/images/edit-jobs", status_code=202)
    async def start_edit_job(
        image: UploadFile = File(...),
        prompt: str = Form(...),
        mask: UploadFile | None = File(None),
        n: int = Form(1),
        size: str | None = Form(None),
        negative_prompt: str | None = Form(None),
        num_inference_steps: int | None = Form(None),
        true_cfg_scale: float = Form(4.0),
        seed: int | None = Form(None),
        strength: float = Form(0.6),
    ) -> dict[str, Any]:
        job = await submit_upload(image, mask, prompt, n, size, num_inference_steps, negative_prompt,
                                  true_cfg_scale, seed, strength)
        return job.to_dict(image_url)

    @router.get("/api/images/status")
    async def status() -> dict[str, Any]:
        return service.status()

    @router.get("/api/images")
    async def gallery(limit: int = 50) -> dict[str, Any]:
        records = service.results.list(max(1, min(limit, 500)))
        for record in records:
            for meta in record.get("images", []):
                meta["url"] = image_url(record["job"], meta["name"])
        return {"images": records}

    @router.get("/api/images/{job_id}/{name}")
    async def image_file(job_id: str, name: str) -> Response:
        path = service.results.file(job_id, name)
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "max-age=31536000, immutable"})

    @router.get("/api/jobs/{job_id}")
    async def job_state(job_id: str) -> dict[str, Any]:
        return service.get(job_id).to_dict(image_url)

    @router.get("/api/jobs/{job_id}/events")
    async def job_events(job_id: str, request: Request, since: int = 0) -> Response:
        job = service.get(job_id)
        last = request.headers.get("last-event-id")
        start = int(last) + 1 if last and last.isdigit() else max(0, since)

        async def stream() -> AsyncIterator[str]:
            async for record in job.follow(start):
                yield f"id: {record['seq']}\nevent: {record['event']}\ndata: {json.dumps(record)}\n\n"

        return StreamingResponse(
            stream(), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.post("/api/jobs/{job_id}/cancel")
    async def cancel(job_id: str) -> dict[str, Any]:
        return service.cancel(job_id).to_dict(image_url)

    @router.delete("/api/jobs/{job_id}")
    async def cancel_delete(job_id: str) -> dict[str, Any]:
        return service.cancel(job_id).to_dict(image_url)

    return router
