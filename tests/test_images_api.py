"""The image API end to end: a real server process on 127.0.0.1 running the
tiny Qwen-Image pipeline (real diffusers, real weights on disk, CPU)."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from tests.images_support.model import COMMIT, new_home, snapshot_in
from tests.images_support.server import image_server

TIMEOUT = 120.0


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return new_home(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def base(home: Path) -> Iterator[str]:
    with image_server(home, snapshot_in(home)) as url:
        yield url


@pytest.fixture()
def client(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=TIMEOUT) as c:
        yield c


def _png(size: tuple[int, int], color: tuple[int, ...] = (30, 120, 200), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def _events(client: httpx.Client, job_id: str, since: int = 0) -> Iterator[dict[str, Any]]:
    """Server-sent events of a job, parsed, until the stream ends."""
    with client.stream("GET", f"/api/jobs/{job_id}/events", params={"since": since}) as res:
        assert res.status_code == 200
        assert res.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in res.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                record = json.loads(line[6:])
                assert record["event"] == name
                yield record


def _generate(client: httpx.Client, **body: Any) -> bytes:
    res = client.post("/v1/images/generations", json={"response_format": "b64_json", **body})
    assert res.status_code == 200, res.text
    (item,) = res.json()["data"]
    return base64.b64decode(item["b64_json"])


def _start(client: httpx.Client, **body: Any) -> dict[str, Any]:
    res = client.post("/api/images/jobs", json=body)
    assert res.status_code == 202, res.text
    job: dict[str, Any] = res.json()
    return job


def _wait_terminal(client: httpx.Client, job_id: str) -> dict[str, Any]:
    *_, last = _events(client, job_id)
    assert last["event"] in ("succeeded", "failed", "cancelled")
    return last


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(client: httpx.Client) -> None:
    body = {"prompt": "a red fox in the snow", "size": "64x48", "num_inference_steps": 3, "seed": 42}
    first = _generate(client, **body)
    again = _generate(client, **body)
    other = _generate(client, **{**body, "seed": 43})
    assert first == again
    assert other != first
    img = Image.open(io.BytesIO(first))
    assert img.format == "PNG" and img.size == (64, 48)
    assert json.loads(img.text["parameters"])["seed"] == 42  # type: ignore[attr-defined]

    # response_format=url: a URL served by the router, never a path on disk.
    res = client.post("/v1/images/generations", json={**body, "response_format": "url"})
    url = res.json()["data"][0]["url"]
    assert url.startswith(str(client.base_url).rstrip("/") + "/api/images/") and url.endswith("/0.png")
    assert client.get(url).content == first


def test_openai_client_can_generate(base: str) -> None:
    api = openai.OpenAI(base_url=base + "/v1", api_key="unused", timeout=TIMEOUT)
    out = api.images.generate(
        model="qwen-image", prompt="a lighthouse by the sea", n=2, size="64x64",
        response_format="b64_json", extra_body={"seed": 7, "num_inference_steps": 2},
    )
    images = [base64.b64decode(d.b64_json) for d in out.data]
    assert len(images) == 2 and images[0] != images[1]  # seeds 7 and 8
    assert all(Image.open(io.BytesIO(b)).size == (64, 64) for b in images)


def test_progress_has_one_event_per_denoising_step_ending_at_the_step_count(client: httpx.Client) -> None:
    job = _start(client, prompt="mountains at sunset", negative_prompt="blurry", size="64x64",
                 num_inference_steps=6, true_cfg_scale=3.0, seed=1)
    events = list(_events(client, job["id"]))
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["queued", "started"] and kinds[-2:] == ["image", "succeeded"]
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4, 5, 6]
    assert {e["total"] for e in steps} == {6}
    assert [e["seq"] for e in events] == list(range(len(events)))
    times = [e["time"] for e in events]
    assert times == sorted(times)
    state = client.get(f"/api/jobs/{job['id']}").json()
    assert state["state"] == "succeeded" and state["progress"] == {"step": 6, "total": 6}

    # Two images: steps continue across them and end at n * steps.
    job2 = _start(client, prompt="two cats", size="32x32", num_inference_steps=3, n=2, seed=5)
    steps2 = [e for e in _events(client, job2["id"]) if e["event"] == "step"]
    assert [e["step"] for e in steps2] == [1, 2, 3, 4, 5, 6]
    assert [e["image"] for e in steps2] == [0, 0, 0, 1, 1, 1] and steps2[-1]["total"] == 6

    # A reader that joins late replays from the start (or from ?since=).
    late = list(_events(client, job["id"], since=3))
    assert [e["seq"] for e in late] == list(range(3, len(events)))


def test_two_jobs_both_complete_in_the_order_submitted(client: httpx.Client) -> None:
    first = _start(client, prompt="first", size="96x96", num_inference_steps=8, seed=1)
    second = _start(client, prompt="second", size="32x32", num_inference_steps=2, seed=2)
    assert client.get(f"/api/jobs/{second['id']}").json()["state"] == "queued"
    assert _wait_terminal(client, second["id"])["event"] == "succeeded"
    a = client.get(f"/api/jobs/{first['id']}").json()
    b = client.get(f"/api/jobs/{second['id']}").json()
    assert a["state"] == b["state"] == "succeeded"
    assert a["finished"] <= b["started"]  # one at a time, first in first out
    for job in (a, b):
        assert client.get(job["images"][0]["url"]).headers["content-type"] == "image/png"


def test_cancel_stops_a_running_job_between_steps_and_a_queued_one_at_once(
    client: httpx.Client, home: Path
) -> None:
    long = _start(client, prompt="slow", size="128x128", num_inference_steps=150, seed=3)
    queued = _start(client, prompt="never", size="32x32", num_inference_steps=2, seed=4)
    res = client.post(f"/api/jobs/{queued['id']}/cancel")
    assert res.status_code == 200 and res.json()["state"] == "cancelled"

    for event in _events(client, long["id"]):
        if event["event"] == "step":
            assert client.delete(f"/api/jobs/{long['id']}").status_code == 200
            break
    last = _wait_terminal(client, long["id"])
    assert last["event"] == "cancelled" and 1 <= last["step"] < 150
    state = client.get(f"/api/jobs/{long['id']}").json()
    assert state["state"] == "cancelled" and state["images"] == []
    assert not (home / "qwenhome" / "images" / long["id"]).exists()
    assert client.get(f"/api/images/{long['id']}/0.png").status_code == 404
    assert client.get(f"/api/jobs/{queued['id']}").json()["started"] is None

    missing = client.post("/api/jobs/" + "f" * 32 + "/cancel")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job-not-found"


def test_invalid_sizes_and_parameters_are_rejected_clearly(client: httpx.Client) -> None:
    res = client.post("/api/images/jobs", json={"prompt": "x", "size": "100x60"})
    assert res.status_code == 400
    err = res.json()["error"]
    assert err["code"] == "invalid-image-size" and err["type"] == "invalid_request_error"
    assert "multiple of 8" in err["message"]
    assert "nearest valid size: 96x64" in err["hint"] and "16:9 160x88" in err["hint"]
    res = client.post("/v1/images/generations", json={"prompt": "x", "size": "4096x4096"})
    assert res.status_code == 400 and res.json()["error"]["code"] == "invalid-image-size"
    res = client.post("/api/images/jobs", json={"prompt": "x", "n": 9})
    assert res.status_code == 400 and res.json()["error"]["code"] == "invalid-image-request"
    res = client.post("/api/images/jobs", json={"prompt": "  "})
    assert res.status_code == 400 and res.json()["error"]["code"] == "invalid-image-request"
    presets = client.get("/api/images/status").json()["sizes"]["presets"]
    assert presets["16:9"]["size"] == "160x88"


def test_malformed_uploads_are_rejected_before_any_job_exists(client: httpx.Client) -> None:
    before = client.get("/api/images/status").json()["queue"]
    cases = {
        "garbage": {"image": ("a.png", b"this is not an image", "image/png")},
        "a text file": {"image": ("notes.txt", b"just some notes\n" * 40, "text/plain")},
        "truncated": {"image": ("a.png", _png((64, 64))[:70], "image/png")},
        "bad mask": {"image": ("a.png", _png((64, 64)), "image/png"), "mask": ("m.png", b"\x89PNG broken", "image/png")},
    }
    for name, files in cases.items():
        for route in ("/api/images/edit-jobs", "/v1/images/edits"):
            res = client.post(route, data={"prompt": "x"}, files=files)
            assert res.status_code == 400, (name, route, res.text)
            assert res.json()["error"]["code"] == "invalid-image", name
            message = res.json()["error"]["message"]
            # What is wrong, in words: no Python repr, no path of the server's spool file.
            assert "object at 0x" not in message and "<_io" not in message and ".upload" not in message, message
    for files in (cases["garbage"], cases["a text file"]):
        res = client.post("/v1/images/edits", data={"prompt": "x"}, files=files)
        assert res.json()["error"]["message"] == "the 'image' upload is not a PNG, JPEG or WebP image"
    res = client.post("/api/images/edit-jobs", data={"prompt": "x"},
                      files={"image": ("a.png", _png((64, 64)), "image/png"), "mask": ("m.png", _png((32, 32)), "image/png")})
    assert res.status_code == 400 and res.json()["error"]["code"] == "invalid-image-request"
    assert client.get("/api/images/status").json()["queue"] == before


def test_image_to_image_and_inpaint_take_uploads(client: httpx.Client, home: Path) -> None:
    source = _png((64, 48))
    res = client.post("/api/images/edit-jobs", data={"prompt": "make it blue", "strength": "0.5",
                                                     "num_inference_steps": "4", "seed": "9"},
                      files={"image": ("in.png", source, "image/png")})
    assert res.status_code == 202, res.text
    job = res.json()
    assert job["params"]["mode"] == "img2img" and job["params"]["size"] == "64x48"
    events = list(_events(client, job["id"]))
    # strength 0.5 of 4 steps: the pipeline runs the last 2, and reports exactly those.
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2]
    assert events[-1]["event"] == "succeeded"

    mask = Image.new("L", (64, 48), 0)
    mask.paste(255, (16, 16, 48, 40))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    res = client.post("/v1/images/edits", data={"prompt": "a window", "num_inference_steps": "3",
                                                "strength": "1.0", "seed": "2", "response_format": "b64_json"},
                      files={"image": ("in.png", source, "image/png"), "mask": ("m.png", buf.getvalue(), "image/png")})
    assert res.status_code == 200, res.text
    out = Image.open(io.BytesIO(base64.b64decode(res.json()["data"][0]["b64_json"])))
    assert out.size == (64, 48)
    stored = home / "qwenhome" / "images" / res.headers["x-qwenhome-job"]
    assert (stored / "input.png").read_bytes() == source and (stored / "mask.png").is_file()
    assert json.loads((stored / "params.json").read_text())["mode"] == "inpaint"


def test_stored_parameters_reproduce_the_image(client: httpx.Client, home: Path) -> None:
    job = _start(client, prompt="a blue cat on a green sofa", negative_prompt="watermark",
                 size="48x64", num_inference_steps=3, true_cfg_scale=2.5, n=2, seed=100)
    assert _wait_terminal(client, job["id"])["event"] == "succeeded"
    folder = home / "qwenhome" / "images" / job["id"]
    params = json.loads((folder / "params.json").read_text())
    assert params["prompt"] == "a blue cat on a green sofa" and params["negative_prompt"] == "watermark"
    assert params["num_inference_steps"] == 3 and params["size"] == "48x64" and params["true_cfg_scale"] == 2.5
    assert params["model_commit"] == COMMIT and [i["seed"] for i in params["images"]] == [100, 101]
    again = _generate(client, **params["reproduce"][1])
    assert again == (folder / "1.png").read_bytes()
    gallery = client.get("/api/images").json()["images"]
    listed = next(r for r in gallery if r["job"] == job["id"])
    assert [i["url"] for i in listed["images"]] == [f"/api/images/{job['id']}/0.png", f"/api/images/{job['id']}/1.png"]


def _health_latencies(base: str, keep_going: Any, at_least: int = 0) -> list[float]:
    out: list[float] = []
    with httpx.Client(base_url=base, timeout=5) as probe:
        while keep_going() or len(out) < at_least:
            t0 = time.perf_counter()
            assert probe.get("/health").status_code == 200
            out.append(time.perf_counter() - t0)
            time.sleep(0.02)
    return sorted(out)


def test_health_answers_within_100ms_while_a_generation_runs(client: httpx.Client, base: str) -> None:
    # The same probe with nothing generating: what this machine gives anyway
    # (a few ms when it is quiet; more when other work shares its two cores).
    idle = _health_latencies(base, lambda: False, at_least=50)
    job = _start(client, prompt="busy", negative_prompt="idle", size="128x128",
                 num_inference_steps=30, true_cfg_scale=4.0, seed=11)
    deadline = time.monotonic() + TIMEOUT
    while client.get(f"/api/jobs/{job['id']}").json()["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    busy = _health_latencies(base, lambda: client.get(f"/api/jobs/{job['id']}").json()["state"] == "running")
    steps = [e["step"] for e in _events(client, job["id"]) if e["event"] == "step"]
    assert steps == list(range(1, 31))  # the generation really ran while we measured
    assert len(busy) >= 10, "the generation ended before /health was measured"

    def pct(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(len(xs) * q))]

    print(f"/health idle: n={len(idle)} p50={pct(idle, .5) * 1e3:.1f} ms p99={pct(idle, .99) * 1e3:.1f} ms "
          f"max={idle[-1] * 1e3:.1f} ms; during generation: n={len(busy)} p50={pct(busy, .5) * 1e3:.1f} ms "
          f"p99={pct(busy, .99) * 1e3:.1f} ms max={busy[-1] * 1e3:.1f} ms")
    # The goal: within 100 ms while generating. What the machine adds without
    # any generation (other processes on two cores) is not the server's doing,
    # so it is allowed on top; on a quiet machine that is a few milliseconds.
    # A server blocked by the generation would take whole steps (seconds).
    assert pct(busy, 0.99) < 0.1 + pct(idle, 0.99)
    assert busy[-1] < 0.25 + idle[-1]


@pytest.mark.parametrize("last", ["9" * 5000, "\u00b2", "\uff11", "+1", "-1", "1_0"])
def test_a_last_event_id_that_is_no_plain_number_is_ignored(client: httpx.Client, last: str) -> None:
    """A reconnect whose Last-Event-ID is not ASCII digits (or beyond any
    count) gets the job's events from the start, never a 500."""
    job = _start(client, prompt="a red square", size="16x16", steps=1, seed=1)
    _wait_terminal(client, job["id"])
    headers = {"Last-Event-ID": last.encode("utf-8") if last.isascii() else last.encode("latin-1", "replace")}
    with client.stream("GET", f"/api/jobs/{job['id']}/events", headers=headers) as res:
        assert res.status_code == 200, res.read()
        seqs = [json.loads(line[6:])["seq"] for line in res.iter_lines() if line.startswith("data: ")]
    assert seqs and seqs[0] == 0, seqs
