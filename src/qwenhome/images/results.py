"""Finished images under the home, each with what it takes to make it again.

    $QWEN_HOME/qwenhome/images/<job-id>/
        0.png, 1.png, …   the images; each PNG also carries its parameters in a text chunk
        params.json       prompt, negative prompt, seeds, steps, size, cfg, model and commit
        input.png         the uploaded image (img2img, inpaint), mask.png (inpaint)

A job's folder is written under a temporary name and renamed into place, so a
folder that exists is complete. Names served over HTTP are checked against
strict patterns; no request can name a path outside this store.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from .errors import JobNotFoundError

PARAMS_FILE = "params.json"
_JOB_RE = re.compile(r"^[0-9a-f]{32}$")
_NAME_RE = re.compile(r"^(?:\d{1,3}|input|mask)\.png$")


def encode_png(image: Any, params: dict[str, Any]) -> bytes:
    """PNG bytes of a PIL image with ``params`` in a ``parameters`` text chunk.

    Deterministic: the same pixels and parameters give the same bytes."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", json.dumps(params, sort_keys=True, ensure_ascii=False))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


class ResultStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _job_dir(self, job_id: str) -> Path:
        if not _JOB_RE.match(job_id):
            raise JobNotFoundError(f"no image job {job_id!r}", job=job_id)
        return self.root / job_id

    def save(self, job_id: str, images: list[bytes], params: dict[str, Any], extra: dict[str, bytes]) -> list[str]:
        """Store a finished job atomically; return the image names."""
        final = self._job_dir(job_id)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{job_id}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            names = []
            for i, data in enumerate(images):
                names.append(f"{i}.png")
                (tmp / names[-1]).write_bytes(data)
            for name, data in extra.items():
                (tmp / name).write_bytes(data)
            record = {**params, "job": job_id, "images": params.get("images", names)}
            (tmp / PARAMS_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return names

    def file(self, job_id: str, name: str) -> Path:
        """Path of a stored image; :class:`JobNotFoundError` for anything else."""
        path = self._job_dir(job_id) / name
        if not _NAME_RE.match(name) or not path.is_file():
            raise JobNotFoundError(f"no image {name!r} for job {job_id!r}", job=job_id, name=name)
        return path

    def params(self, job_id: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self._job_dir(job_id) / PARAMS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise JobNotFoundError(f"no stored images for job {job_id!r}", job=job_id) from exc
        return data

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        """Stored jobs, newest first (by ``finished`` time in their params)."""
        if not self.root.is_dir():
            return []
        records = []
        for entry in self.root.iterdir():
            if not _JOB_RE.match(entry.name):
                continue
            try:
                records.append(self.params(entry.name))
            except JobNotFoundError:
                continue
        records.sort(key=lambda r: float(r.get("finished", 0)), reverse=True)
        return records[:limit]


def image_url(job_id: str, name: str) -> str:
    """The URL the router serves a stored image at (never a filesystem path)."""
    return f"/api/images/{job_id}/{name}"
