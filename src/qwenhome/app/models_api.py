"""Model management and the doctor over HTTP: thin calls into the library.

    GET    /api/models                      what the home holds, with size and state
    POST   /api/models/pull {"repo"}        start a pull -> {"id", ...} (202)
    GET    /api/pulls/{id}                  a pull's state
    GET    /api/pulls/{id}/events           its progress as server-sent events
    DELETE /api/pulls/{id}                  cancel it
    DELETE /api/models/{repo}               remove a repository from the home
    POST   /api/models/{repo}/verify        re-hash its files
    GET    /api/doctor                      the doctor's report
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ..demo.labels import demo_label
from ..errors import NotCachedError
from ..repo.ref import RepoRef
from ..store.cache import Store
from .errors import ApiError
from .state import AppState, get_state

router = APIRouter(prefix="/api")


class PullRequest(BaseModel):
    repo: str


def _store(state: AppState) -> Store:
    return Store(state.settings.hub_cache, state.settings.state_dir)


def _model_state(info: dict[str, Any], pulling: bool) -> str:
    if pulling:
        return "pulling"
    revs = info.get("revisions", [])
    if any(r.get("complete") is True for r in revs):
        return "complete"
    if any(r.get("complete") is None for r in revs):
        return "unverified"  # written by another tool: no manifest to check against
    return "incomplete"


def _list_models(state: AppState) -> list[dict[str, Any]]:
    from ..store.scan import list_repos

    pulling = state.pulls.running_repos()
    served = state.model_id.split("@")[0]
    out = []
    for repo in list_repos(_store(state)):
        info = repo.to_dict()
        info["state"] = _model_state(info, repo.ref.repo_id in pulling)
        info["served"] = repo.ref.repo_id == served
        info.update(demo_label(repo.ref.repo_id))  # {"demo": true, "note"} for the demo's models
        out.append(info)
    return out


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    state = get_state(request)
    models = await run_in_threadpool(_list_models, state)
    pulls = [j.summary() for j in state.pulls.jobs.values() if not j.finished]
    return {"home": str(state.settings.home), "models": models, "pulls": pulls}


@router.post("/models/pull", status_code=202)
async def start_pull(request: Request, body: PullRequest) -> JSONResponse:
    state = get_state(request)
    ref = RepoRef.parse(body.repo)
    job, created = state.pulls.start(ref)
    doc = {**job.summary(), "events": f"/api/pulls/{job.id}/events", "created": created}
    return JSONResponse(doc, status_code=202 if created else 200)


def _job(state: AppState, job_id: str) -> Any:
    job = state.pulls.get(job_id)
    if job is None:
        raise ApiError(404, f"no pull with id {job_id!r}", code="pull-not-found")
    return job


@router.get("/pulls/{job_id}")
async def pull_status(request: Request, job_id: str) -> dict[str, Any]:
    summary: dict[str, Any] = _job(get_state(request), job_id).summary()
    return summary


@router.delete("/pulls/{job_id}")
async def cancel_pull(request: Request, job_id: str) -> dict[str, Any]:
    job = _job(get_state(request), job_id)
    job.cancel.set()
    summary: dict[str, Any] = job.summary()
    return summary


@router.get("/pulls/{job_id}/events")
async def pull_events(request: Request, job_id: str) -> StreamingResponse:
    job = _job(get_state(request), job_id)
    # A reconnecting EventSource sends the last id it saw; resume after it.
    last = request.headers.get("last-event-id", "")
    start = int(last) + 1 if last.isdigit() else 0

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        async for item in job.follow(start):
            if item is None:
                yield ": keep-alive\n\n"
                continue
            index, event = item
            yield f"id: {index}\ndata: {json.dumps(event)}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.delete("/models/{repo:path}")
async def remove_model(request: Request, repo: str) -> dict[str, Any]:
    from ..store.remove import remove_repo

    state = get_state(request)
    ref = RepoRef.parse(repo)
    if ref.repo_id == state.model_id.split("@")[0]:
        raise ApiError(
            409,
            f"{ref.repo_id} is the model being served",
            code="model-in-use",
            hint="stop the server (or launch another model) before removing it",
        )
    if ref.repo_id in state.pulls.running_repos():
        raise ApiError(409, f"{ref.repo_id} is being pulled", code="pull-running", hint="cancel the pull first")
    report = await run_in_threadpool(remove_repo, _store(state), ref)
    out: dict[str, Any] = report.to_dict()
    return out


@router.post("/models/{repo:path}/verify")
async def verify_model(request: Request, repo: str) -> dict[str, Any]:
    from ..store.verify import verify_repo

    state = get_state(request)
    ref = RepoRef.parse(repo)
    store = _store(state)
    if not store.repo_dir(ref).is_dir():
        raise NotCachedError(f"{ref} is not in the home ({store.root})", repo=str(ref))
    report = await run_in_threadpool(verify_repo, store, ref)
    out: dict[str, Any] = report.to_dict()
    out["ok"] = report.ok
    return out


@router.get("/doctor")
async def doctor(request: Request) -> dict[str, Any]:
    from ..doctor import run_doctor

    state = get_state(request)
    report = await run_in_threadpool(run_doctor, state.settings, repo=state.model_id)
    out: dict[str, Any] = report.to_dict()
    return out
