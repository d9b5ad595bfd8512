"""OpenAI-compatible endpoints: ``GET /v1/models``, ``GET /v1/models/{id}``,
``POST /v1/chat/completions``.

Thin: validate the request, hand it to the scheduler (whose engine runs in a
worker process) or the proxy (vLLM), render the answer as OpenAI does,
streaming as server-sent events. A request that arrives while the engine
loads or restarts waits for it (up to the server's bound, then 503 with
Retry-After).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ..errors import QwenhomeError
from .engine import Completion, LocalEngine, Message, SamplingParams, Started
from .errors import ApiError, error_body
from .proxy import http_client, proxy_chat
from .state import AppState, get_state
from .text import Text, printable

DEFAULT_MAX_TOKENS = 512
MAX_STOPS = 4

router = APIRouter()


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: Text


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: Text | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    # Unknown OpenAI fields (logprobs, user, …) are accepted and ignored, as vLLM does.
    model_config = ConfigDict(extra="allow")
    model: Text
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: Text | list[Text] | None = None
    # int64, as OpenAI and vLLM take it (torch takes any of these).
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    n: int = Field(default=1, ge=1, le=1)
    ignore_eos: bool = False  # a vLLM extension, kept so benchmarks run alike on both engines

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if len(stops) > MAX_STOPS:
            raise ApiError(400, f"at most {MAX_STOPS} stop sequences are allowed", code="invalid-request")
        return stops

    def chat_messages(self) -> list[Message]:
        # "developer" is OpenAI's new name for "system"; chat templates know only the latter.
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


def model_card(model_id: str, created: int, kind: str = "chat", state: str = "served") -> dict[str, Any]:
    """An OpenAI model object, with what qwenhome knows: ``kind`` (chat or
    image) and ``state`` (served, loading, available)."""
    return {"id": model_id, "object": "model", "created": created, "owned_by": "qwenhome",
            "kind": kind, "state": state}


async def _cards(state: AppState) -> list[dict[str, Any]]:
    from .models_api import served_states

    states = await run_in_threadpool(served_states, state)
    cards = [model_card(m["repo"], state.started, m["kind"], m["state"]) for m in states if m["complete"]]
    if state.proxy is not None and not any(c["id"] == state.proxy.model_id for c in cards):
        cards.insert(0, model_card(state.proxy.model_id, state.started))
    return cards


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    """Every model this server can serve (chat and image), the served ones first."""
    return {"object": "list", "data": await _cards(get_state(request))}


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(request: Request, model_id: str) -> dict[str, Any]:
    for card in await _cards(get_state(request)):
        if card["id"] == model_id:
            return card
    raise ApiError(404, f"model {model_id!r} is not in this server's home", code="model-not-found",
                   hint="GET /v1/models lists the models it can serve")


def _check_model(state: AppState, name: str) -> None:
    if name not in (state.model_id, state.model_id.split("@")[0]):
        raise ApiError(
            404,
            f"model {name!r} is not served here",
            code="model-not-found",
            hint=f"this server serves {state.model_id!r}; another model of the home is served after "
                 f'POST /api/served {{"chat": "{printable(name)[:200]}"}} (GET /v1/models lists them)',
        )


def _local_params(engine: LocalEngine, req: ChatRequest) -> SamplingParams:
    """The sampling parameters; the prompt's fit in the context is checked by
    the engine as it starts (``context-length-exceeded``), in the same message
    to the worker as the generation."""
    wanted = req.max_completion_tokens or req.max_tokens
    limit = engine.context_length
    if wanted is not None and wanted > limit:
        raise ApiError(
            400,
            f"max_tokens={wanted} exceeds the model's context length of {limit} tokens",
            code="max-tokens-too-large",
            hint=f"ask for at most {limit} tokens, minus the prompt",
        )
    return SamplingParams(
        max_tokens=wanted if wanted is not None else DEFAULT_MAX_TOKENS,
        temperature=req.temperature,
        top_p=req.top_p,
        seed=req.seed,
        stop=req.stops(),
        ignore_eos=req.ignore_eos,
        strict_max_tokens=wanted is not None,
    )


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request, req: ChatRequest) -> Response | dict[str, Any]:
    state = get_state(request)
    _check_model(state, req.model)
    if state.proxy is not None:
        return await proxy_chat(state.proxy, req.model_dump(exclude_none=True), http_client(state))
    slot = await state.ready_chat()
    engine = slot.engine
    messages = req.chat_messages()
    params = _local_params(engine, req)
    scheduler = slot.scheduler
    rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        pieces = scheduler.stream(messages, params)
        # A prompt the engine refuses raises here, before any header is sent.
        first = await anext(pieces)
        assert isinstance(first, Started)
        return StreamingResponse(
            _sse_chunks(pieces, rid, created, slot.model, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    text: list[str] = []
    completion: Completion | None = None
    async for item in scheduler.stream(messages, params):
        if isinstance(item, Completion):
            completion = item
        elif isinstance(item, str):
            text.append(item)
    assert completion is not None
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": slot.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(text)},
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": completion.usage.to_dict(),
    }


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _sse_chunks(
    pieces: AsyncIterator[Started | str | Completion], rid: str, created: int, model: str, include_usage: bool
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    yield _sse(chunk({"role": "assistant", "content": ""}))
    end = ""  # the finish (and usage, or the error) leave with [DONE], in one write
    try:
        async for item in pieces:
            if isinstance(item, Completion):
                end = _sse(chunk({}, item.finish_reason))
                if include_usage:
                    end += _sse({**chunk({}), "choices": [], "usage": item.usage.to_dict()})
            elif isinstance(item, str):
                yield _sse(chunk({"content": item}))
    except QwenhomeError as exc:
        # Headers are sent already: the error travels in the stream, as OpenAI does.
        end += _sse(error_body(exc))
    finally:
        aclose = getattr(pieces, "aclose", None)
        if aclose is not None:
            await aclose()
    yield end + "data: [DONE]\n\n"


def json_error(exc: QwenhomeError, status: int) -> JSONResponse:
    return JSONResponse(error_body(exc, status), status_code=status)
