"""Methods the API has no route for (OPTIONS, TRACE, made-up ones) get a
JSON 405 on every route, never a 500 or an HTML page (checked on main: the
API already did; kept so it stays so)."""

from __future__ import annotations

from pathlib import Path

import httpx

from qwenhome.app.server import create_app
from qwenhome.app.state import AppState
from qwenhome.config import load_settings
from tests.app_support.servers import serve_app


def test_options_trace_and_unknown_methods_get_a_json_405(tmp_path: Path) -> None:
    settings = load_settings({}, home=str(tmp_path / "home"), sources=["http://127.0.0.1:9"])
    state = AppState(settings, "Other/Model")
    routes = ["/", "/health", "/api/info", "/api/models", "/api/models/Org/Small", "/v1/models",
              "/v1/chat/completions", "/api/models/pull"]
    with serve_app(create_app(state)) as url, httpx.Client(base_url=url, timeout=10) as client:
        for route in routes:
            for method in ("OPTIONS", "TRACE", "FOO"):
                r = client.request(method, route)
                assert r.status_code == 405, (method, route, r.status_code)
                assert r.json()["error"]["code"] == "method-not-allowed", (method, route)
        assert client.get("/health").status_code == 200
