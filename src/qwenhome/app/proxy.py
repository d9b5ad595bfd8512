"""Forwarding OpenAI requests to an upstream engine server (vLLM).

The request body goes through unchanged (vLLM implements the same API and its
own sampling, stop and seed handling); streamed answers are relayed chunk by
chunk as they arrive. The upstream's own error bodies pass through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import Response, StreamingResponse

from .engine import ProxyEngine
from .errors import ApiError

PASS_HEADERS = ("content-type", "cache-control")


def http_client(holder: Any) -> Any:
    """The shared ``httpx.AsyncClient`` kept on ``holder.http``, made on first use:
    httpx is needed only when proxying, so the app extra does not require it."""
    if holder.http is None:
        import httpx

        holder.http = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0))
    return holder.http


def _unavailable(engine: ProxyEngine, exc: Exception) -> ApiError:
    return ApiError(
        503,
        f"the {engine.info().get('engine', 'upstream')} engine at {engine.base_url} is not answering: {exc}",
        code="engine-unavailable",
        hint="it may be starting or restarting; the launcher restarts a crashed engine",
    )


async def proxy_chat(engine: ProxyEngine, body: dict[str, Any], client: Any) -> Response:
    import httpx

    url = f"{engine.base_url}/v1/chat/completions"
    request = client.build_request("POST", url, json=body)
    try:
        upstream = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise _unavailable(engine, exc) from exc
    headers = {k: v for k, v in upstream.headers.items() if k.lower() in PASS_HEADERS}
    if not body.get("stream") or upstream.status_code != 200:
        try:
            content = await upstream.aread()
        finally:
            await upstream.aclose()
        return Response(content, status_code=upstream.status_code, headers=headers)

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()

    return StreamingResponse(relay(), status_code=200, headers=headers, media_type="text/event-stream")


async def upstream_health(engine: ProxyEngine, client: Any) -> bool:
    import httpx

    try:
        r = await client.get(f"{engine.base_url}/health", timeout=2.0)
    except httpx.HTTPError:
        return False
    return bool(r.status_code == 200)


__all__ = ["proxy_chat", "upstream_health"]
