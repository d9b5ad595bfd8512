"""Property-based fuzzing of every route that takes a body, against the real
server process (``python -m qwenhome.app.serve``: the tiny chat model and the
tiny Qwen-Image pipeline, offline, on 127.0.0.1).

Whatever the body, the answer is a 2xx, or a 4xx JSON ``{"error": {"code",
"message", ...}}``; never a 5xx, never a traceback in the answer or in the
server's log, never a request that outlives its time bound. Bodies mix
valid-looking requests (each field drawn from right types, wrong types, out of
range numbers, NaN and infinities, lone surrogates) with arbitrary JSON and
bytes. Examples are few per route to keep the whole run near a minute; valid
image requests are kept to one denoising step, and image jobs are cancelled
once accepted.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from qwenhome.config import load_settings
from qwenhome.demo import DEMO_REPO, ensure_demo_model
from qwenhome.images.demo import ensure_demo_image_model
from tests.app_support.servers import ServerProcess, serve_process
from tests.app_support.tiny import seed_demo_repos

REQUEST_BOUND = 60.0  # seconds; a longer answer is a hang
FUZZ = settings(deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp("fuzz")
    home = work / "home"
    seed_demo_repos(home)
    conf = load_settings({}, home=str(home))
    snapshot = ensure_demo_model(conf)
    ensure_demo_image_model(conf)
    with serve_process(home, snapshot, DEMO_REPO, workdir=work) as s:
        status: dict[str, Any] = {}
        for _ in range(600):  # the image pipeline loads after the chat model
            status = httpx.get(f"{s.url}/api/images/status", timeout=10).json()
            if status.get("state") != "loading":
                break
            time.sleep(0.1)
        assert status.get("state") == "ready", status
        yield s
        log = s.log_text()
        assert "Traceback" not in log, log[-4000:]
        assert httpx.get(f"{s.url}/health", timeout=10).json()["status"] == "ready"


# -- values ----------------------------------------------------------------------

huge_ints = st.integers(min_value=-(2**80), max_value=2**80)
odd_floats = st.floats(allow_nan=True, allow_infinity=True)
texts = st.text(max_size=30)  # surrogates included: JSON escapes them as \udXXX
json_scalars = st.one_of(st.none(), st.booleans(), huge_ints, odd_floats, texts)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)), max_leaves=12)


def field(*valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value: right ones, or anything at all."""
    return st.one_of(*valid, json_values)


def body(fixed: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    shaped = st.fixed_dictionaries(fixed, optional=optional)
    return st.one_of(shaped, shaped, shaped, json_values)


content = field(texts, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": texts}), max_size=2))
message = st.one_of(st.fixed_dictionaries(
    {"role": field(st.sampled_from(["system", "user", "assistant", "developer"])), "content": content}), json_values)
few_tokens = field(st.integers(min_value=-2, max_value=6), huge_ints)

chat_bodies = body(
    {"model": field(st.just(DEMO_REPO)), "messages": field(st.lists(message, min_size=1, max_size=3)),
     "max_tokens": few_tokens},
    {"stream": field(st.booleans()), "stream_options": field(st.fixed_dictionaries({"include_usage": st.booleans()})),
     "max_completion_tokens": few_tokens, "temperature": field(odd_floats, st.floats(0, 2)),
     "top_p": field(odd_floats, st.floats(0, 1)), "seed": field(huge_ints, st.integers(0, 2**32)),
     "n": field(st.integers(-2, 3)), "stop": field(texts, st.lists(texts, max_size=6)),
     "ignore_eos": st.sampled_from([False, 0, "no", "junk", None]), "logprobs": json_values},
)

image_fields: dict[str, st.SearchStrategy[Any]] = {
    "negative_prompt": field(texts), "true_cfg_scale": field(odd_floats, st.floats(1, 20)),
    "seed": field(huge_ints, st.integers(0, 2**32)), "model": field(texts),
    "response_format": field(st.sampled_from(["url", "b64_json", "png"])),
}
one_step = field(st.just(1), st.integers(-3, 0), st.integers(151, 2**70))
image_bodies = body(
    {"prompt": field(texts, st.text(min_size=4001, max_size=4010)), "num_inference_steps": one_step,
     "size": field(st.sampled_from(["16x16", "16x24", "17x16", "0x0", "99999x99999", "auto", "1:1", "x"]))},
    {"n": field(st.just(1), st.integers(-2, 6)), **image_fields},
)
pull_bodies = body({"repo": field(st.sampled_from([DEMO_REPO, "Org/Name", "a/b@main", "../x", "a/b/c", ""]))}, {})


def _png(size: tuple[int, int], fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format=fmt)
    return buf.getvalue()


IMAGES = {"png": _png((16, 16)), "jpeg": _png((24, 16), "JPEG"), "gif": _png((16, 16), "GIF"),
          "truncated": _png((16, 16))[:40], "junk": b"not an image", "empty": b""}
form_text = st.one_of(st.sampled_from(["1", "0", "-1", "2", "151", "0.5", "nan", "inf", "1e400", "16x16", "url",
                                       "b64_json", "", "x" * 5000]), st.text(max_size=20).map(
    lambda s: s.encode("utf-8", "surrogatepass").decode("utf-8", "replace")))
edit_forms = st.fixed_dictionaries(
    {"prompt": form_text, "num_inference_steps": st.sampled_from(["1", "0", "x", "200", ""])},
    optional={"n": form_text, "size": form_text, "strength": form_text, "seed": form_text,
              "true_cfg_scale": form_text, "negative_prompt": form_text, "response_format": form_text},
)
edit_files = st.fixed_dictionaries({"image": st.sampled_from(sorted(IMAGES))},
                                   optional={"mask": st.sampled_from(sorted(IMAGES)), "other": st.just("png")})


# -- the property ----------------------------------------------------------------

def encode(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value, allow_nan=True).encode()


def check(r: httpx.Response, sent: Any) -> dict[str, Any] | None:
    """The property every answer must have; returns the JSON of a 2xx answer."""
    where = f"{r.request.method} {r.request.url.path} {sent!r:.300} -> {r.status_code} {r.text[:300]!r}"
    assert r.status_code < 500, where
    assert "Traceback" not in r.text, where
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        for line in r.text.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                assert "error" not in json.loads(line[6:]), where
        return None
    doc = r.json()
    if r.status_code >= 400:
        err = doc["error"]
        assert isinstance(err["code"], str) and err["code"] and isinstance(err["message"], str), where
        return None
    assert 200 <= r.status_code < 300, where
    return dict(doc)


def post(server: ServerProcess, path: str, value: Any) -> dict[str, Any] | None:
    r = httpx.post(server.url + path, content=encode(value), timeout=REQUEST_BOUND,
                   headers={"Content-Type": "application/json"})
    return check(r, value)


def cancel_job(server: ServerProcess, doc: dict[str, Any] | None) -> None:
    if doc and "id" in doc:
        check(httpx.post(f"{server.url}/api/jobs/{doc['id']}/cancel", timeout=REQUEST_BOUND), doc["id"])


@settings(FUZZ, max_examples=45)
@given(value=st.one_of(chat_bodies, st.binary(max_size=64)))
def test_chat_completions_never_fail_on_any_body(server: ServerProcess, value: Any) -> None:
    post(server, "/v1/chat/completions", value)


@settings(FUZZ, max_examples=12)
@given(value=image_bodies)
def test_image_generations_never_fail_on_any_body(server: ServerProcess, value: Any) -> None:
    post(server, "/v1/images/generations", value)


@settings(FUZZ, max_examples=25)
@given(value=st.one_of(image_bodies, st.binary(max_size=64)))
def test_image_jobs_never_fail_on_any_body(server: ServerProcess, value: Any) -> None:
    cancel_job(server, post(server, "/api/images/jobs", value))


@settings(FUZZ, max_examples=25)
@given(fields=edit_forms, files=edit_files, route=st.sampled_from(["/api/images/edit-jobs", "/v1/images/edits"]))
def test_image_edits_never_fail_on_any_form(server: ServerProcess, fields: dict[str, str], files: dict[str, str],
                                            route: str) -> None:
    if route == "/v1/images/edits":
        fields = {**fields, "num_inference_steps": "1"}  # the route waits for the job: keep it short
    r = httpx.post(server.url + route, data=fields, timeout=REQUEST_BOUND,
                   files={name: (f"{name}.img", IMAGES[kind], "image/png") for name, kind in files.items()})
    cancel_job(server, check(r, (fields, files)))


@settings(FUZZ, max_examples=25)
@given(value=st.one_of(pull_bodies, st.binary(max_size=64)))
def test_pull_requests_never_fail_on_any_body(server: ServerProcess, value: Any) -> None:
    post(server, "/api/models/pull", value)


plain_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
valid_chat = st.fixed_dictionaries(
    {"model": st.just(DEMO_REPO), "max_tokens": st.integers(1, 6),
     "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "developer"]),
                                                 "content": plain_text}), min_size=1, max_size=3)},
    optional={"temperature": st.floats(0, 2), "top_p": st.floats(0, 1, exclude_min=True),
              "seed": st.integers(0, 2**32 - 1), "stop": st.lists(plain_text.filter(bool), max_size=4),
              "stream": st.booleans(), "n": st.just(1)},
)


@settings(FUZZ, max_examples=15)
@given(value=valid_chat)
def test_valid_chat_requests_are_answered(server: ServerProcess, value: dict[str, Any]) -> None:
    r = httpx.post(server.url + "/v1/chat/completions", json=value, timeout=REQUEST_BOUND)
    assert r.status_code == 200, (value, r.text[:300])
    doc = check(r, value)
    if not value.get("stream"):
        assert doc is not None and isinstance(doc["choices"][0]["message"]["content"], str)
        assert doc["usage"]["completion_tokens"] <= value["max_tokens"]
