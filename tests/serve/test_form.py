"""The bounded multipart reader: limits hold while the body streams in, names sent by clients are dropped."""

import asyncio

import pytest

from simclr_watches.serve.errors import ApiError
from simclr_watches.serve.form import MAX_FIELD_BYTES, max_body_bytes, read_form

BOUNDARY = "XyZ123"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def body(*parts: tuple[str, bytes, str | None]) -> bytes:
    """A multipart body of (field name, content, file name or None for a text field)."""
    out = b""
    for name, content, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def read(data: bytes, chunk: int = 7, content_type: str = CONTENT_TYPE, length: str | None = None, **limits):
    """Runs read_form on ``data`` fed in ``chunk``-byte pieces; returns (form, bytes the reader pulled)."""
    pulled = []

    async def chunks():
        for i in range(0, len(data), chunk):
            pulled.append(chunk)
            yield data[i : i + chunk]

    limits = {"max_file_bytes": 100, "max_files": 1, **limits}
    form = asyncio.run(read_form(content_type, length, chunks(), **limits))
    return form, sum(pulled)


def test_files_and_fields_are_read_and_file_names_dropped():
    form, _ = read(body(("image", b"\x89PNG" * 10, "../../etc/passwd"), ("k", b"5", None)))
    assert form.files == [("image", b"\x89PNG" * 10)] and form.fields == {"k": "5"}


def test_a_file_over_the_limit_is_refused_as_soon_as_it_passes_it():
    data = body(("image", b"x" * 5000, "a.jpg"))
    with pytest.raises(ApiError) as info:
        read(data, chunk=10, max_file_bytes=100)
    assert info.value.status == 413 and "more than the limit of 100 bytes" in info.value.message


def test_reading_stops_at_the_limit_not_at_the_end_of_the_body():
    pulled = []

    async def endless():
        yield f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a\"\r\n\r\n".encode()
        while True:
            pulled.append(1)
            yield b"z" * 1000

    with pytest.raises(ApiError, match="more than the limit of 100000 bytes"):
        asyncio.run(read_form(CONTENT_TYPE, None, endless(), max_file_bytes=100_000))
    assert len(pulled) <= 101  # an endless upload costs the limit, not more


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    with pytest.raises(ApiError) as info:
        read(body(("image", b"x", "a")), length=str(max_body_bytes(100, 1) + 1))
    assert info.value.status == 413 and info.value.message.startswith("upload too large")


@pytest.mark.parametrize("content_type, status", [("application/json", 415), (None, 415),
                                                  ("multipart/form-data", 415)])
def test_only_multipart_with_a_boundary_is_read(content_type, status):
    with pytest.raises(ApiError) as info:
        read(body(("image", b"x", "a")), content_type=content_type)
    assert info.value.status == status and "multipart/form-data" in info.value.message


def test_too_many_files_fields_or_a_long_field_are_refused():
    two = body(("image", b"a", "1"), ("image", b"b", "2"))
    with pytest.raises(ApiError, match="too many files: at most 1"):
        read(two)
    assert [d for _, d in read(two, max_files=2)[0].files] == [b"a", b"b"]
    with pytest.raises(ApiError, match="too many form fields"):
        read(body(*[(f"f{i}", b"1", None) for i in range(9)]))
    with pytest.raises(ApiError, match="exceeds 1024 bytes"):
        read(body(("k", b"1" * (MAX_FIELD_BYTES + 1), None)))


def test_a_part_without_a_name_or_with_endless_headers_is_refused():
    nameless = f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()
    with pytest.raises(ApiError, match="has no name") as info:
        read(nameless)
    assert info.value.status == 400
    huge = f"--{BOUNDARY}\r\nX-Pad: {'a' * 10000}\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()
    with pytest.raises(ApiError, match="malformed multipart form: Maximum header size exceeded") as info:
        read(huge, chunk=512)
    assert info.value.status == 400


def test_a_truncated_body_gives_no_file():
    data = body(("image", b"abcdef", "a"))
    form, _ = read(data[: len(data) // 2 + 40])
    assert form.files == []
