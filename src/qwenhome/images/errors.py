"""Errors of the image engine, as leaves of qwenhome's one exception tree.

    QwenhomeError
    ├── UsageError
    │   ├── ImageSizeError        invalid-image-size
    │   ├── InvalidImageError     invalid-image, image-too-large
    │   ├── UploadTooLargeError   upload-too-large
    │   └── ImageRequestError     invalid-image-request
    ├── JobNotFoundError          job-not-found
    ├── QueueFullError            queue-full
    ├── ImageModelError           image-model-invalid, image-engine-missing
    └── ImageEngineError          image-generation-failed, out-of-memory

``http_status`` maps each to the status the web API answers with.
"""

from __future__ import annotations

from ..errors import QwenhomeError, UsageError


class ImageSizeError(UsageError):
    code = "invalid-image-size"
    http_status = 400


class InvalidImageError(UsageError):
    code = "invalid-image"
    http_status = 400
    default_hint = "upload a PNG, JPEG or WebP file as multipart form data (field 'image', optional 'mask')"


class UploadTooLargeError(UsageError):
    code = "upload-too-large"
    http_status = 413
    default_hint = "upload a smaller file (PNG, JPEG or WebP); the model works at 2048 pixels a side at most"


class ImageRequestError(UsageError):
    code = "invalid-image-request"
    http_status = 400


class JobNotFoundError(QwenhomeError):
    code = "job-not-found"
    http_status = 404
    default_hint = "job ids come from POST /api/images/jobs; finished images are listed at GET /api/images"


class QueueFullError(QwenhomeError):
    code = "queue-full"
    http_status = 429
    default_hint = "wait for queued jobs to finish, or cancel some (POST /api/jobs/{id}/cancel)"


class ImageModelError(QwenhomeError):
    code = "image-model-invalid"
    http_status = 503
    default_hint = "pull the image model again (`qwenhome pull Qwen/Qwen-Image`) and check `qwenhome verify`"


class ImageEngineError(QwenhomeError):
    code = "image-generation-failed"
    http_status = 500


def http_status(exc: QwenhomeError) -> int:
    """The HTTP status for an error the image API reports."""
    status = getattr(exc, "http_status", None)
    if isinstance(status, int):
        return status
    return 400 if isinstance(exc, UsageError) else 500
