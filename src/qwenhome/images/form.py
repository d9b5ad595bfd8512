"""Multipart uploads read as they arrive: file parts go to disk under the
home (``$QWEN_HOME/qwenhome/tmp/uploads``), a chunk at a time, and stop at
their size limit; text fields are small and few. Nothing of an upload is held
whole in memory, whatever its size.

    form = await read_form(request, spool_dir, max_file_bytes=MAX_UPLOAD_BYTES)
    try:
        prompt, image = form.fields.get("prompt"), form.files.get("image")   # image: a Path
    finally:
        form.discard()
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from .errors import ImageRequestError, UploadTooLargeError

MAX_FIELD_BYTES = 64 * 1024  # a prompt is at most 4000 characters
MAX_FIELDS = 32
MAX_PART_HEADER_BYTES = 16 * 1024


@dataclass
class UploadForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def discard(self) -> None:
        """Remove the spooled files (the decoded images live on in memory)."""
        for path in self.files.values():
            try:
                path.unlink()
            except FileNotFoundError:
                pass


def _multipart() -> tuple[Any, Any]:
    """python-multipart's ``multipart`` and ``exceptions`` modules (before 0.0.13
    the package installed as ``multipart``)."""
    for package in ("python_multipart", "multipart"):
        try:
            return (importlib.import_module(f"{package}.multipart"),
                    importlib.import_module(f"{package}.exceptions"))
        except ImportError:
            continue
    raise ImportError("python-multipart is not installed")


class _Reader:
    """python-multipart callbacks: fields into memory (bounded), files to disk (bounded)."""

    def __init__(self, spool_dir: Path, file_fields: tuple[str, ...], max_file_bytes: int) -> None:
        self.spool_dir = spool_dir
        self.file_fields = file_fields
        self.max_file_bytes = max_file_bytes
        self.form = UploadForm()
        self.pending: list[tuple[IO[bytes], bytes]] = []  # written off the event loop, after each chunk
        self._open: list[IO[bytes]] = []
        self._header_name = b""
        self._header_value = b""
        self._header_bytes = 0
        self._disposition = b""
        self._name = ""
        self._file: IO[bytes] | None = None
        self._size = 0
        self._data = bytearray()

    def on_part_begin(self) -> None:
        self._disposition, self._header_bytes, self._size = b"", 0, 0
        self._file, self._data = None, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_bytes += end - start
        self._check_header()
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_bytes += end - start
        self._check_header()
        self._header_value += data[start:end]

    def _check_header(self) -> None:
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise ImageRequestError(f"a form part's headers pass {MAX_PART_HEADER_BYTES} bytes")

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        multipart, _ = _multipart()
        _kind, options = multipart.parse_options_header(self._disposition)
        name = options.get(b"name")
        if name is None:
            raise ImageRequestError("a form part has no name", hint="send fields as multipart/form-data")
        self._name = name.decode("utf-8", "replace")
        if b"filename" not in options:
            if len(self.form.fields) >= MAX_FIELDS:
                raise ImageRequestError(f"more than {MAX_FIELDS} form fields")
            return
        if self._name not in self.file_fields:
            raise ImageRequestError(
                f"unexpected file in form field {self._name!r}",
                hint=f"files go in {' and '.join(repr(f) for f in self.file_fields)}",
            )
        if self._name in self.form.files:
            raise ImageRequestError(f"more than one file in form field {self._name!r}")
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=f"{self._name}-", suffix=".upload", dir=self.spool_dir)
        self._file = os.fdopen(fd, "wb")
        self._open.append(self._file)
        self.form.files[self._name] = Path(path)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._file is None:
            if self._size > MAX_FIELD_BYTES:
                raise ImageRequestError(f"form field {self._name!r} passes {MAX_FIELD_BYTES} bytes")
            self._data += data[start:end]
            return
        if self._size > self.max_file_bytes:
            raise UploadTooLargeError(
                f"the {self._name!r} upload is larger than {self.max_file_bytes // (1024 * 1024)} MiB",
                field=self._name,
            )
        self.pending.append((self._file, data[start:end]))

    def on_part_end(self) -> None:
        if self._file is None:
            self.form.fields[self._name] = self._data.decode("utf-8", "replace")

    def close_files(self) -> None:
        for f in self._open:
            f.close()


def _write(pending: list[tuple[IO[bytes], bytes]]) -> None:
    for f, data in pending:
        f.write(data)


async def read_form(
    request: Any,
    spool_dir: Path,
    *,
    file_fields: tuple[str, ...] = ("image", "mask"),
    max_file_bytes: int,
) -> UploadForm:
    """Read a ``multipart/form-data`` request body. Raises ImageRequestError
    (400) for a body that is not such a form, UploadTooLargeError (413) as
    soon as a file passes ``max_file_bytes``; leaves no file behind on error."""
    multipart, exceptions = _multipart()
    kind, params = multipart.parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ImageRequestError("the request is not multipart/form-data",
                                hint="send the image as a file field 'image' of a multipart form")
    reader = _Reader(spool_dir, file_fields, max_file_bytes)
    callbacks = {name: getattr(reader, name) for name in (
        "on_part_begin", "on_part_data", "on_part_end", "on_header_field", "on_header_value",
        "on_header_end", "on_headers_finished")}
    try:
        parser = multipart.MultipartParser(boundary, callbacks)
        stream: AsyncIterator[bytes] = request.stream()
        async for chunk in stream:
            parser.write(chunk)
            if reader.pending:
                pending, reader.pending = reader.pending, []
                await run_in_threadpool(_write, pending)
        parser.finalize()
    except ClientDisconnect as exc:
        reader.close_files()
        reader.form.discard()
        raise ImageRequestError("the upload ended before the form did") from exc
    except exceptions.FormParserError as exc:
        reader.close_files()
        reader.form.discard()
        raise ImageRequestError(f"the multipart form is malformed: {exc}") from exc
    except BaseException:
        reader.close_files()
        reader.form.discard()
        raise
    reader.close_files()
    return reader.form
