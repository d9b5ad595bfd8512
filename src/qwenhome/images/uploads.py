"""Uploaded images (image-to-image, inpaint): decoded from what the request sent.

An upload must be a PNG, JPEG or WebP image that Pillow decodes completely;
anything else is rejected with ``invalid-image`` before a job exists. Its
size in pixels is read from the header and checked *before* any pixel is
decoded, so a small file that would decode to gigabytes (a decompression
bomb) is refused with ``image-too-large`` at the cost of reading a header.
Decoding is blocking work: the API calls :func:`read_upload` off the event
loop. The server never reads an image from a path a client names.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidImageError, UploadTooLargeError

MAX_UPLOAD_BYTES = 32 * 1024 * 1024
MAX_UPLOAD_SIDE = 8192
# 4096x4096: twice the largest side Qwen-Image works at; decoded as RGB, 48 MiB.
MAX_UPLOAD_PIXELS = 4096 * 4096
FORMATS = ("PNG", "JPEG", "WEBP")


@dataclass(frozen=True)
class Upload:
    png: bytes  # normalised: RGB (image) or L (mask), re-encoded as PNG
    width: int
    height: int


def _pil() -> Any:
    from PIL import Image

    # Pillow's own decompression-bomb limit, set for uploads: it refuses an
    # image past twice this (8192x8192) at open, a backstop behind the check
    # in read_upload. Its warning below that says nothing that check does not
    # (it refuses before decoding), so it is not logged.
    Image.MAX_IMAGE_PIXELS = MAX_UPLOAD_SIDE * MAX_UPLOAD_SIDE // 2
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    return Image


def _too_large(field: str, width: int, height: int) -> InvalidImageError:
    return InvalidImageError(
        f"the {field!r} upload is {width}x{height} pixels, more than {MAX_UPLOAD_PIXELS // 1_000_000} "
        f"megapixels or {MAX_UPLOAD_SIDE} on a side",
        code="image-too-large",
        hint="scale the image down (the model works at 2048 pixels a side at most) and upload it again",
        field=field,
    )


def read_upload(data: bytes | Path, field: str = "image", *, mask: bool = False) -> Upload:
    """Decode and normalise an upload, from its bytes or the file it was spooled to.
    A mask is white where the image is repainted.

    A mask with transparency follows OpenAI's convention instead: transparent
    pixels are the ones to repaint."""
    Image = _pil()
    from PIL import UnidentifiedImageError

    size = len(data) if isinstance(data, bytes) else Path(data).stat().st_size
    if not size:
        raise InvalidImageError(f"the {field!r} upload is empty", field=field)
    if size > MAX_UPLOAD_BYTES:
        raise UploadTooLargeError(f"the {field!r} upload is {size} bytes, more than {MAX_UPLOAD_BYTES}", field=field)

    def opened() -> Any:
        return Image.open(io.BytesIO(data) if isinstance(data, bytes) else data, formats=FORMATS)

    try:
        with opened() as probe:
            width, height = probe.size  # from the header: nothing is decoded yet
            if max(width, height) > MAX_UPLOAD_SIDE or width * height > MAX_UPLOAD_PIXELS:
                raise _too_large(field, width, height)
            probe.verify()  # structure and checksums; the object is unusable afterwards
        with opened() as img:
            img.load()  # decode every pixel: truncated data fails here
            if mask:
                alpha = img.getchannel("A") if "A" in img.getbands() else None
                if alpha is not None and int(alpha.getextrema()[0]) < 255:
                    out = alpha.point(lambda a: 255 - a)
                else:
                    out = img.convert("L")
            else:
                out = img if img.mode == "RGB" else img.convert("RGB")
            buf = io.BytesIO()
            out.save(buf, format="PNG")
    except InvalidImageError:
        raise
    except Image.DecompressionBombError as exc:  # past twice the limit: refused at open
        raise InvalidImageError(
            f"the {field!r} upload has more than {MAX_UPLOAD_SIDE}x{MAX_UPLOAD_SIDE} pixels ({exc})",
            code="image-too-large", hint="scale the image down and upload it again", field=field) from exc
    except UnidentifiedImageError as exc:
        # Pillow's message names the file object (a repr): say what is wrong instead.
        raise InvalidImageError(f"the {field!r} upload is not a PNG, JPEG or WebP image", field=field) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError(f"the {field!r} upload is not a readable image: {exc}", field=field) from exc
    return Upload(buf.getvalue(), out.size[0], out.size[1])
