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
generation runs in the service's worker process and waiting is ``await``; a
request that arrives while the model loads or restarts waits for it (at most
the service's ``ready_wait``, then 503 with Retry-After); an
upload is streamed to disk as it arrives (at most 32 MiB a file,
``upload-too-large``) and decoded on a worker thread, one at a time, after its
header says it is at most 4096x4096 pixels (``image-too-large``).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from ..app.errors import ApiError, error_body, headers_for
from ..app.text import Text
from ..errors import QwenhomeError
from ..net.ranges import parse_count
from .errors import ImageRequestError, http_status
from .form import read_form
from .jobs import SUCCEEDED, Job
from .results import image_url
from .service import ImageService
from .uploads import MAX_UPLOAD_BYTES, Upload, read_upload

EDIT_ROUTES = ("/v1/images/edits", "/api/images/edit-jobs")
# What an edit request may carry: two files at their limit, and the fields.
EDIT_BODY_LIMIT = 2 * MAX_UPLOAD_BYTES + 1024 * 1024


class GenerationBody(BaseModel):
    """OpenAI's image generation request, plus Qwen-Image's own parameters."""

    prompt: Text
    n: int = 1
    size: Text | None = None
    response_format: Literal["b64_json", "url"] = "url"
    model: Text | None = None
    negative_prompt: Text | None = None
    num_inference_steps: int | None = Field(default=None)
    true_cfg_scale: float = 4.0
    seed: int | None = None


class EditFields(BaseModel):
    """The text fields of an edit form (multipart), as OpenAI's image edit API names them."""

    model_config = ConfigDict(extra="ignore")
    prompt: str
    n: int = 1
    size: str | None = None
    response_format: Literal["b64_json", "url"] = "url"
    model: str | None = None
    negative_prompt: str | None = None
    num_inference_steps: int | None = None
    true_cfg_scale: float = 4.0
    seed: int | None = None
    strength: float = 0.6

    @classmethod
    def parse(cls, fields: dict[str, str]) -> EditFields:
        # As HTML forms do: an empty field is a field not given.
        given = {k: v for k, v in fields.items() if v != ""}
        try:
            return cls.model_validate(given)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', ())) or 'form'}: {e.get('msg', 'invalid')}"
                for e in exc.errors()[:5]
            )
            raise ImageRequestError(f"invalid form: {problems}",
                                    hint="send the fields as multipart/form-data text fields") from exc


class _ErrorRoute(APIRoute):
    """Renders qwenhome errors raised by this router's endpoints as JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except QwenhomeError as exc:
                status = exc.status if isinstance(exc, ApiError) else http_status(exc)
                return JSONResponse(error_body(exc, status), status_code=status, headers=headers_for(exc))

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


# The edit routes read their form themselves (streamed to disk); this documents it.
_EDIT_FORM: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image", "prompt"],
    "properties": {"image": {"type": "string", "format": "binary"}, "mask": {"type": "string", "format": "binary"},
                   **EditFields.model_json_schema()["properties"]}}}}}}


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

    async def engine_ready() -> None:
        # A request that arrives while the model loads or restarts waits for it, within a bound.
        if not await service.until_ready(service.ready_wait):
            raise service.unavailable()

    async def submit_json(body: GenerationBody) -> Job:
        await engine_ready()
        return service.submit(
            service.make_request(
                prompt=body.prompt, n=body.n, size=body.size, steps=body.num_inference_steps,
                negative_prompt=body.negative_prompt, true_cfg_scale=body.true_cfg_scale, seed=body.seed,
            )
        )

    # Decoding takes memory in proportion to the pixels: one upload at a time.
    decoding = asyncio.Semaphore(1)

    async def submit_upload(request: Request) -> tuple[Job, EditFields]:
        form = await read_form(request, service.uploads_dir, max_file_bytes=MAX_UPLOAD_BYTES)
        try:
            fields = EditFields.parse(form.fields)
            if "image" not in form.files:
                raise ImageRequestError("the form has no 'image' file",
                                        hint="send the image to edit as the file field 'image'")
            uploads: dict[str, Upload] = {}
            async with decoding:
                for name, path in form.files.items():
                    uploads[name] = await run_in_threadpool(read_upload, path, name, mask=name == "mask")
        finally:
            form.discard()
        await engine_ready()
        job = service.submit(
            service.make_request(
                prompt=fields.prompt, n=fields.n, size=fields.size, steps=fields.num_inference_steps,
                negative_prompt=fields.negative_prompt, true_cfg_scale=fields.true_cfg_scale, seed=fields.seed,
                image=uploads["image"], mask=uploads.get("mask"), strength=fields.strength,
            )
        )
        return job, fields

    @router.post("/v1/images/generations")
    async def openai_generations(body: GenerationBody, request: Request) -> Response:
        job = await submit_json(body)
        await job.wait()
        return _openai_result(request, job, service, body.response_format)

    @router.post(EDIT_ROUTES[0], openapi_extra=_EDIT_FORM)
    async def openai_edits(request: Request) -> Response:
        job, fields = await submit_upload(request)
        await job.wait()
        return _openai_result(request, job, service, fields.response_format)

    @router.post("/api/images/jobs", status_code=202)
    async def start_job(body: GenerationBody) -> dict[str, Any]:
        return (await submit_json(body)).to_dict(image_url)

    @router.post(EDIT_ROUTES[1], status_code=202, openapi_extra=_EDIT_FORM)
    async def start_edit_job(request: Request) -> dict[str, Any]:
        job, _fields = await submit_upload(request)
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
        # (Only plain ASCII digits, bounded: anything else starts from ``since``.)
        last = parse_count(request.headers.get("last-event-id"))
        start = last + 1 if last is not None else max(0, since)

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
