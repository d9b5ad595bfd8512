"""The image service in-process (its worker a real process), on the tiny
pipeline: what happens when the model cannot load, when a model loads but
fails to generate, when the queue is full, and what a stopped service does."""

from __future__ import annotations

import json
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


def test_a_model_that_loads_but_cannot_generate_fails_the_job_and_the_worker_lives_on(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot"
    shutil.copytree(tiny_snapshot(), snapshot)
    config = snapshot / "transformer" / "config.json"
    data = json.loads(config.read_text())
    data["axes_dims_rope"] = [4, 4, 4]  # no longer the head size: rotary embeddings fail at the first step
    config.unlink()
    config.write_text(json.dumps(data))
    service = ImageService(load_settings({"QWEN_HOME": str(tmp_path / "home")}), snapshot, CPU)
    service.start()
    try:
        assert service.wait_ready(120) and service.status()["state"] == "ready"
        pid = service.status()["worker"]["pid"]
        for _ in range(2):
            job = service.submit(service.make_request(prompt="x", size="32x32", steps=2, seed=1))
            deadline = time.monotonic() + 60
            while not job.done and time.monotonic() < deadline:
                time.sleep(0.02)
            assert job.state == "failed" and job.error is not None
            assert job.error["code"] == "image-generation-failed"
            assert job.error["message"].startswith("generation failed: The size of tensor")
        assert service.status()["worker"] == {"pid": pid, "restarts": 0, "last_exit": None}
    finally:
        service.stop()
