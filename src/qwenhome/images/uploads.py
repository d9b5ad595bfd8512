"""Uploaded images (image-to-image, inpaint): read from the request body only.

An upload must be a real image that Pillow decodes completely; anything else
is rejected with ``invalid-image`` before a job exists. The server never reads
an image from a path a client names.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from .errors import InvalidImageError

MAX_UPLOAD_BYTES = 32 * 1024 * 1024
MAX_UPLOAD_SIDE = 8192


@dataclass(frozen=True)
class Upload:
    png: bytes  # normalised: RGB (image) or L (mask), re-encoded as PNG
    width: int
    height: int


def read_upload(data: bytes, field: str = "image", *, mask: bool = False) -> Upload:
    """Decode and normalise an upload. A mask is white where the image is repainted.

    A mask with transparency follows OpenAI's convention instead: transparent
    pixels are the ones to repaint."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InvalidImageError(f"the {field!r} upload is empty", field=field)
    if len(data) > MAX_UPLOAD_BYTES:
        raise InvalidImageError(
            f"the {field!r} upload is {len(data)} bytes, more than {MAX_UPLOAD_BYTES}", field=field
        )
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()  # structure and checksums; the object is unusable afterwards
        with Image.open(io.BytesIO(data)) as img:
            if max(img.size) > MAX_UPLOAD_SIDE:
                raise InvalidImageError(
                    f"the {field!r} upload is {img.size[0]}x{img.size[1]}, larger than {MAX_UPLOAD_SIDE} on a side",
                    field=field,
                )
            img.load()  # decode every pixel: truncated data fails here
            if mask:
                alpha = img.getchannel("A") if "A" in img.getbands() else None
                if alpha is not None and int(alpha.getextrema()[0]) < 255:  # type: ignore[arg-type]
                    out = alpha.point(lambda a: 255 - a)
                else:
                    out = img.convert("L")
            else:
                out = img.convert("RGB")
    except InvalidImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(f"the {field!r} upload is not a readable image: {exc}", field=field) from exc
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return Upload(buf.getvalue(), out.size[0], out.size[1])
