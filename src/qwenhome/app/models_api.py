"""Model management and the doctor over HTTP: thin calls into the library.

    GET    /api/models                      what the home holds, with size and state
    POST   /api/models/pull {"repo"}        start a pull -> {"id", ...} (202)
    GET    /api/pulls/{id}                  a pull's state
    GET    /api/pulls/{id}/events           its progress as server-sent events
    DELETE /api/pulls/{id}                  cancel it
    DELETE /api/models/{repo}               remove a repository from the home
    POST   /api/models/{repo}/verify        re-hash its files
    GET    /api/doctor                      the doctor's report
    GET    /api/served                      what is served, and every servable model with its state
    POST   /api/served {"chat"?, "image"?}  serve another model of the home, without a restart (202)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from ..demo.labels import demo_label
from ..errors import NotCachedError
from ..net.ranges import parse_count
from ..repo.ref import RepoRef
from ..store.cache import Store
from .errors import ApiError
from .servable import find_servable, servable_models
from .state import AppState, get_state
from .text import Text

router = APIRouter(prefix="/api")


class PullRequest(BaseModel):
    repo: Text


class ServeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    chat: Text | None = None
    image: Text | None = None


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


def _serving_state(engine_state: str) -> str:
    return {"ready": "served", "failed": "failed"}.get(engine_state, "loading")


def served_states(state: AppState) -> list[dict[str, Any]]:
    """Every servable model of the home: ``repo``, ``kind`` (chat, image),
    ``complete``, and ``state``: ``served``, ``loading`` (or restarting),
    ``failed``, ``available``, or ``incomplete``. Served ones come first."""
    served = {kind: engine for kind, engine in state.served().items() if engine.state != "stopped"}
    out: list[dict[str, Any]] = []
    for m in servable_models(state.settings):
        engine = served.get(m.kind)
        if engine is not None and engine.model.split("@")[0] == m.repo:
            serving = _serving_state(engine.state)
            del served[m.kind]
        else:
            serving = "available" if m.complete else "incomplete"
        out.append({"repo": m.repo, "kind": m.kind, "state": serving, "complete": m.complete})
    for kind, engine in served.items():  # served from outside the scan (a folder given by path)
        out.append({"repo": engine.model, "kind": kind, "state": _serving_state(engine.state), "complete": True})
    if state.proxy is not None:
        out = [m for m in out if not (m["kind"] == "chat" and m["repo"] == state.proxy.model_id)]
        out.append({"repo": state.proxy.model_id, "kind": "chat", "state": "served", "complete": True})
    out.sort(key=lambda m: (m["state"] not in ("served", "loading", "failed"), m["repo"]))
    return out


def _list_models(state: AppState) -> list[dict[str, Any]]:
    from ..store.scan import list_repos

    pulling = state.pulls.running_repos()
    served = {m["repo"]: m for m in served_states(state)}
    out = []
    for repo in list_repos(_store(state)):
        info = repo.to_dict()
        info["state"] = _model_state(info, repo.ref.repo_id in pulling)
        serving = served.get(repo.ref.repo_id)
        info["kind"] = serving["kind"] if serving else None
        info["serving"] = serving["state"] if serving else None  # served, loading, failed, available, incomplete
        info["served"] = bool(serving and serving["state"] in ("served", "loading", "failed")) \
            or repo.ref.repo_id == state.model_id.split("@")[0]
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
    # (Only plain ASCII digits, bounded: anything else starts the stream over.)
    last = parse_count(request.headers.get("last-event-id"))
    start = last + 1 if last is not None else 0

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
    served = {engine.model.split("@")[0] for engine in state.served().values() if engine.state != "stopped"}
    if ref.repo_id in served | {state.model_id.split("@")[0]}:
        raise ApiError(
            409,
            f"{ref.repo_id} is the model being served",
            code="model-in-use",
            hint="serve another model first (the Models panel, or POST /api/served), then remove it",
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


@router.get("/served")
async def get_served(request: Request) -> dict[str, Any]:
    state = get_state(request)
    engines = {kind: engine.describe() for kind, engine in state.served().items()}
    models = await run_in_threadpool(served_states, state)
    return {"served": engines, "models": models}


@router.post("/served", status_code=202)
async def set_served(request: Request, body: ServeRequest) -> JSONResponse:
    """Serve other models of the home: each named one loads in a new worker
    and replaces the one serving its kind (requests in flight on that one end
    with ``model-switched``). Answers at once; ``/health`` says when it is ready."""
    state = get_state(request)
    wanted = [(kind, repo) for kind, repo in (("chat", body.chat), ("image", body.image)) if repo]
    if not wanted:
        raise ApiError(400, "name a model to serve", code="invalid-request",
                       hint='send {"chat": "Org/Name"} and/or {"image": "Org/Name"}; GET /api/served lists them')
    targets = []
    for kind, repo in wanted:
        found = await run_in_threadpool(find_servable, state.settings, repo, kind)
        engine = state.engines().get(kind)
        if kind == "image" and engine is None:
            raise ApiError(409, "image generation is not running in this server", code="image-engine-missing",
                           hint="install the images extra (pip install 'qwenhome[images]') and launch again")
        targets.append((kind, found))
    for kind, found in targets:
        if kind == "chat":
            await run_in_threadpool(state.switch_chat, found.repo, found.snapshot)
        else:
            image: Any = state.engines()[kind]  # the image service
            await run_in_threadpool(image.switch, found.repo, found.snapshot)
    doc = await get_served(request)
    return JSONResponse(doc, status_code=202)
