"""The image service in-process, on the tiny pipeline: what happens when the
model cannot load, when the queue is full, and what a stopped service does."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from qwenhome.config import load_settings
from qwenhome.images import ImageService, Policy, QueueFullError
from tests.images_support.model import tiny_snapshot

CPU = Policy("cpu", "float32", reason="tests")


def test_a_model_that_cannot_load_fails_its_jobs_with_the_reason(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot"
    shutil.copytree(tiny_snapshot(), snapshot)
    (snapshot / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 64)
    service = ImageService(load_settings({"QWEN_HOME": str(tmp_path / "home")}), snapshot, CPU)
    service.start()
    try:
        assert service.wait_ready(120)
        status = service.status()
        assert status["state"] == "failed"
        assert status["error"]["code"] == "image-model-invalid"
        assert str(snapshot) in status["error"]["message"]
        job = service.submit(service.make_request(prompt="x", size="32x32", steps=2, seed=1))
        deadline = time.monotonic() + 30
        while not job.done and time.monotonic() < deadline:
            time.sleep(0.02)
        assert job.state == "failed" and job.error is not None
        assert job.error["code"] == "image-model-invalid"
        assert [e["event"] for e in job.events()] == ["queued", "started", "failed"]
    finally:
        service.stop()


def test_a_full_queue_refuses_more_work_and_stop_cancels_what_waits(tmp_path: Path) -> None:
    service = ImageService(load_settings({"QWEN_HOME": str(tmp_path / "home")}), tiny_snapshot(), CPU, max_queue=2)
    # Not started: nothing runs, so jobs stay queued.
    request = service.make_request(prompt="x", size="32x32", steps=2, seed=1)
    waiting = [service.submit(request), service.submit(request)]
    with pytest.raises(QueueFullError) as info:
        service.submit(request)
    assert info.value.code == "queue-full" and info.value.http_status == 429
    service.start()  # the worker loads the model before it takes a job…
    service.stop()  # …and stop cancels what waits, at once
    assert [j.state for j in waiting] == ["cancelled", "cancelled"]
    assert all(j.started is None for j in waiting)
    assert service.status()["state"] == "stopped"
