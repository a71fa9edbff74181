"""Multipart uploads read as they arrive, within limits: never a byte past a limit, never on disk.

FastAPI's ``UploadFile`` reads a whole upload (spooled to a temporary file) before a
handler sees its size. :func:`read_form` instead feeds the request's chunks to
python-multipart's streaming parser and refuses the request (413) as soon as a part
grows past its limit, keeping only the bytes of parts within it, in memory. The parser
itself bounds each part's headers (8 lines of at most about 4 KB).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from simclr_watches.serve.errors import ApiError

MAX_FIELD_BYTES = 1024  # a text field (``k``) is a few characters
MAX_FIELDS = 8
OVERHEAD_BYTES = 64 * 1024  # boundaries and part headers, beyond the parts' content


@dataclass
class Form:
    """A multipart form: its files (field name, bytes), in order, and its text fields.

    The file names clients send are dropped: nothing here names a file on disk.
    """

    files: list[tuple[str, bytes]] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class _Part:
    name: str | None = None
    is_file: bool = False
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)


class _Collector:
    """python-multipart's callbacks, each checking its limit as the bytes come."""

    def __init__(self, max_file_bytes: int, max_files: int):
        self.max_file_bytes, self.max_files = max_file_bytes, max_files
        self.form, self.part, self.name_bytes, self.value_bytes = Form(), _Part(), b"", b""

    def callbacks(self) -> dict:
        return {"on_part_begin": self.begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.data, "on_part_end": self.end}

    def begin(self) -> None:
        self.part = _Part()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.name_bytes += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.value_bytes += data[start:end]

    def header_end(self) -> None:
        self.part.headers[self.name_bytes.strip().lower()] = self.value_bytes
        self.name_bytes, self.value_bytes = b"", b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self.part.headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise ApiError(400, "a form part has no name (Content-Disposition: form-data; name=...)")
        self.part.name = options[b"name"].decode("utf-8", "replace")
        self.part.is_file = b"filename" in options
        if self.part.is_file and len(self.form.files) >= self.max_files:
            raise ApiError(413, f"too many files: at most {self.max_files} per request")
        if not self.part.is_file and len(self.form.fields) >= MAX_FIELDS:
            raise ApiError(400, f"too many form fields: at most {MAX_FIELDS}")

    def data(self, data: bytes, start: int, end: int) -> None:
        self.part.data += data[start:end]
        if self.part.is_file and len(self.part.data) > self.max_file_bytes:
            raise ApiError(413, f"file too large: more than the limit of {self.max_file_bytes} bytes")
        if not self.part.is_file and len(self.part.data) > MAX_FIELD_BYTES:
            raise ApiError(400, f"form field {self.part.name!r} exceeds {MAX_FIELD_BYTES} bytes")

    def end(self) -> None:
        if self.part.is_file:
            self.form.files.append((self.part.name, bytes(self.part.data)))
        else:
            self.form.fields[self.part.name] = self.part.data.decode("utf-8", "replace")


def max_body_bytes(max_file_bytes: int, max_files: int) -> int:
    """The largest request body a form of ``max_files`` files of ``max_file_bytes`` may have."""
    return max_files * max_file_bytes + MAX_FIELDS * MAX_FIELD_BYTES + OVERHEAD_BYTES


async def read_form(content_type: str | None, content_length: str | None, chunks: AsyncIterator[bytes], *,
                    max_file_bytes: int, max_files: int = 1) -> Form:
    """Reads a ``multipart/form-data`` body chunk by chunk, refusing it as soon as it breaks a limit.

    Args:
        content_type: the request's Content-Type header (holds the boundary).
        content_length: its Content-Length header, if any: a body declared too large is
            refused before a byte of it is read.
        chunks: the body as it arrives (Starlette's ``request.stream()``).
        max_file_bytes: largest file part.
        max_files: most file parts.

    Raises:
        ApiError: 415 not multipart/form-data; 413 a file, the files or the body too large;
            400 a malformed form.
    """
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in options:
        raise ApiError(415, "expected a multipart/form-data upload (a form with the photo as a file field)")
    limit = max_body_bytes(max_file_bytes, max_files)
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise ApiError(413, f"upload too large: {content_length} bytes; the limit is {max_file_bytes} bytes a photo")
    collector = _Collector(max_file_bytes, max_files)
    parser = MultipartParser(options[b"boundary"], collector.callbacks())
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > limit:
                raise ApiError(413, f"upload too large: more than {limit} bytes")
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as e:
        raise ApiError(400, f"malformed multipart form: {e}") from None
    return collector.form
