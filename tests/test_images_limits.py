"""The image API's limits against the real app (qwenhome.app.server with the
images extension, its own process on 127.0.0.1). Uploads are streamed to
disk under the home, bounded while they arrive, and decoded off the event
loop only after the header's size was checked, so a huge upload or a
decompression bomb costs the server neither memory nor its answers to
/health. A generation that runs out of memory (under a real memory limit)
says ``out-of-memory``, and the server lives on."""

from __future__ import annotations

import io
import resource
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.app_support.servers import ServerProcess, raw_request
from tests.images_support.model import new_home, png_bomb
from tests.images_support.server import image_server_process

MiB = 1024 * 1024
BOUNDARY = "qwenhome-test-boundary"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return new_home(tmp_path_factory.mktemp("uploads"))


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[ServerProcess]:
    with image_server_process(home) as s:
        yield s


def png(size: tuple[int, int], noise: bool = False) -> bytes:
    img = Image.frombytes("RGB", size, bytes((i * 7919) % 251 for i in range(size[0] * size[1] * 3))) if noise \
        else Image.new("RGB", size, (30, 120, 200))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=0 if noise else 6)
    return buf.getvalue()


def form(fields: dict[str, str], name: str) -> tuple[bytes, bytes]:
    """(head, tail) of a multipart body whose last part is the file ``name``:
    the body is head + the file's bytes + tail."""
    out = b""
    for key, value in fields.items():
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{key}\"\r\n\r\n{value}\r\n").encode()
    out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode()
    return out, f"\r\n--{BOUNDARY}--\r\n".encode()


def multipart(fields: dict[str, str], files: dict[str, bytes]) -> bytes:
    """A whole multipart body (any number of files, or none)."""
    out = b""
    for key, value in fields.items():
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{key}\"\r\n\r\n{value}\r\n").encode()
    for key, data in files.items():
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{key}\"; filename=\"f\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def uploads(home: Path) -> list[Path]:
    folder = home / "qwenhome" / "tmp" / "uploads"
    return sorted(folder.iterdir()) if folder.is_dir() else []


class HealthProbe:
    """GET /health in a loop while something else runs; every answer's status."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as c:
            while not self._stop.is_set():
                self.statuses.append(c.get(f"{self.url}/health").status_code)
                time.sleep(0.02)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.statuses and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_a_decompression_bomb_is_refused_from_its_header(server: ServerProcess, home: Path) -> None:
    bomb = png_bomb()
    assert len(bomb) < 1 * MiB
    before = server.rss()
    server.reset_peak()
    answers: list[httpx.Response] = []

    def send() -> None:
        answers.append(httpx.post(f"{server.url}/api/images/edit-jobs", data={"prompt": "x"},
                                  files={"image": ("bomb.png", bomb, "image/png")}, timeout=60))

    with HealthProbe(server.url) as probe:
        senders = [threading.Thread(target=send) for _ in range(4)]
        for t in senders:
            t.start()
        for t in senders:
            t.join(120)
    assert len(answers) == 4
    for r in answers:
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "image-too-large" and "8192x8192" in err["message"], err
    growth = max(server.peak(), server.rss()) - before
    assert growth < 64 * MiB, f"the server grew by {growth / MiB:.0f} MiB"
    assert probe.statuses and set(probe.statuses) == {200}
    assert uploads(home) == []
    assert "Traceback" not in server.log_text()


def test_an_upload_past_the_limit_is_cut_off_while_it_arrives(server: ServerProcess, home: Path) -> None:
    head, tail = form({"prompt": "x"}, "image")
    before = server.rss()
    server.reset_peak()

    sent: list[int] = []

    def body() -> Iterator[bytes]:  # chunked: no Content-Length to refuse it by
        yield head
        block = b"\0" * MiB
        for _ in range(160):
            sent.append(len(block))
            yield block
        yield tail

    with HealthProbe(server.url) as probe:
        r = httpx.post(f"{server.url}/api/images/edit-jobs", content=body(), headers=HEADERS, timeout=60)
    assert r.status_code == 413, r.text[:300]
    assert r.json()["error"]["code"] == "upload-too-large"
    # The server closed the connection with its answer, rather than read and drop the other 128 MiB.
    assert sum(sent) < 100 * MiB, f"{sum(sent) // MiB} MiB sent"
    growth = max(server.peak(), server.rss()) - before
    assert growth < 64 * MiB, f"the server grew by {growth / MiB:.0f} MiB"
    assert probe.statuses and set(probe.statuses) == {200}
    assert uploads(home) == []

    # Declared up front, it is refused before a byte of it is read.
    host = server.url.split("//")[1]
    status, answer = raw_request(server.url, f"POST /v1/images/edits HTTP/1.1\r\nHost: {host}\r\n"
                                 f"Content-Type: {HEADERS['Content-Type']}\r\nContent-Length: {500 * MiB}\r\n\r\n")
    assert status == 413 and answer["error"]["code"] == "request-too-large"  # type: ignore[index]


def test_an_upload_is_spooled_under_the_home_and_removed_after(server: ServerProcess, home: Path) -> None:
    image = png((1200, 1000), noise=True)  # about 3.6 MB: arrives in many chunks
    assert len(image) > 3 * MiB
    head, tail = form({"prompt": "make it blue", "num_inference_steps": "1", "seed": "3", "n": ""}, "image")
    seen: list[int] = []

    def body() -> Iterator[bytes]:
        yield head + image[:2 * MiB]
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:  # the first part is on disk before the rest is sent
            files = uploads(home)
            if files and files[0].stat().st_size >= MiB:
                seen.append(files[0].stat().st_size)
            time.sleep(0.02)
        yield image[2 * MiB:] + tail

    r = httpx.post(f"{server.url}/api/images/edit-jobs", content=body(), headers=HEADERS, timeout=60)
    assert r.status_code == 202, r.text
    assert r.json()["params"]["mode"] == "img2img"
    assert seen, "no spooled upload under the home while the body arrived"
    assert uploads(home) == []


@pytest.mark.parametrize(
    ("fields", "files", "content_type", "code"),
    [
        ({"prompt": "x", "n": "two"}, {"image": "ok"}, None, "invalid-image-request"),
        ({"prompt": "x", "strength": "nan"}, {"image": "ok"}, None, "invalid-image-request"),
        ({}, {"image": "ok"}, None, "invalid-image-request"),
        ({"prompt": "x"}, {}, None, "invalid-image-request"),
        ({"prompt": "x"}, {"other": "ok"}, None, "invalid-image-request"),
        ({"prompt": "x"}, {"image": "ok"}, "application/json", "invalid-image-request"),
        ({"prompt": "x"}, {"image": "gif"}, None, "invalid-image"),
    ],
)
def test_bad_edit_forms_get_a_400_with_a_code(server: ServerProcess, home: Path, fields: dict[str, str],
                                              files: dict[str, str], content_type: str | None, code: str) -> None:
    gif = io.BytesIO()
    Image.new("RGB", (16, 16)).save(gif, format="GIF")
    data = {"ok": png((16, 16)), "gif": gif.getvalue()}
    body = multipart(fields, {name: data[kind] for name, kind in files.items()})
    r = httpx.post(f"{server.url}/api/images/edit-jobs", content=body, timeout=30,
                   headers={"Content-Type": content_type} if content_type else HEADERS)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code
    assert uploads(home) == []


def test_a_prompt_that_is_not_text_is_refused_with_a_400(server: ServerProcess) -> None:
    # A lone surrogate, escaped in JSON: the job used to be accepted, its
    # parameters unencodable in the answer, params.json and the PNG.
    for route in ("/api/images/jobs", "/v1/images/generations"):
        r = httpx.post(server.url + route, content=b'{"prompt": "a fox \\ud800", "num_inference_steps": 1}',
                       headers={"Content-Type": "application/json"}, timeout=60)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid-request"


def test_a_generation_that_runs_out_of_memory_says_so_and_the_server_lives_on(server: ServerProcess) -> None:
    body = {"prompt": "a fox", "size": "192x192", "num_inference_steps": 1, "seed": 1, "response_format": "b64_json"}
    # Once with room: torch's thread pool and the pipeline's lazy parts exist before the limit.
    assert httpx.post(f"{server.url}/v1/images/generations", json=body, timeout=120).status_code == 200
    # The pipeline runs in the image worker process: the limit is set on it.
    pid = httpx.get(f"{server.url}/api/images/status", timeout=10).json()["worker"]["pid"]
    assert pid != server.proc.pid
    vm = int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if line.startswith("VmSize:")).split()[1]) * 1024
    before = resource.prlimit(pid, resource.RLIMIT_AS)
    # 16 MB more address space: the worker's own work fits, the pipeline's
    # buffers at 192x192 (24-48 MB each) do not.
    resource.prlimit(pid, resource.RLIMIT_AS, (vm + 16 * MiB, before[1]))
    try:
        r = httpx.post(f"{server.url}/v1/images/generations", json=body, timeout=120)
        health = httpx.get(f"{server.url}/health", timeout=10).status_code
    finally:
        resource.prlimit(pid, resource.RLIMIT_AS, before)
    assert r.status_code == 500, r.text
    err = r.json()["error"]
    assert err["code"] == "out-of-memory" and "192x192" in err["message"] and "smaller size" in err["hint"]
    assert health == 200
    assert httpx.post(f"{server.url}/v1/images/generations", json=body, timeout=120).status_code == 200
    worker = httpx.get(f"{server.url}/api/images/status", timeout=10).json()["worker"]
    assert worker["pid"] == pid and worker["restarts"] == 0  # the same worker lived on
