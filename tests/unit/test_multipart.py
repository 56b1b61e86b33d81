"""Splitting multipart bodies in memory: werkzeug's fields and files, or None (werkzeug
then parses the body itself)."""

import io

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import MultiPartParser

from ocr_service.multipart import split_form

BOUNDARY = "b0und4ry"
LIMITS = {"max_parts": 1000, "max_field_bytes": 500_000}


def _werkzeug(body: bytes, boundary: str = BOUNDARY):
    """werkzeug's reading of the body: (fields, files as bytes) as lists of pairs."""
    parser = MultiPartParser(max_form_memory_size=LIMITS["max_field_bytes"],
                             max_form_parts=LIMITS["max_parts"])
    fields, files = parser.parse(io.BytesIO(body), boundary.encode(), len(body))
    return (list(fields.items(multi=True)),
            [(name, upload.read()) for name, upload in files.items(multi=True)])


def _split(body: bytes, boundary: str = BOUNDARY, **limits):
    split = split_form(body, boundary, **{**LIMITS, **limits})
    if split is None:
        return None
    fields, files = split
    return list(fields.items(multi=True)), list(files.items(multi=True))


def _encode(parts: list[tuple[str, str | None, bytes]], boundary: str = BOUNDARY) -> bytes:
    """A body as clients write it: (name, filename or None, content) per part."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: image/png\r\n"
        out += b"\r\n" + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_a_body_written_by_requests_splits_as_werkzeug_reads_it():
    prepared = requests.Request(
        "POST", "http://t/", files=[("image", ("a.png", b"\x89PNG\r\n1")),
                                    ("image", ("b.png", b"\r\n--b0und\r\n2"))],
        data={"top_k": "2", "segment": "multi"}).prepare()
    boundary = prepared.headers["Content-Type"].split("boundary=")[1]
    split = _split(prepared.body, boundary)
    assert split == _werkzeug(prepared.body, boundary)
    fields, files = split
    assert dict(fields) == {"top_k": "2", "segment": "multi"}
    assert files == [("image", b"\x89PNG\r\n1"), ("image", b"\r\n--b0und\r\n2")]


def test_a_body_written_by_werkzeugs_test_client_splits_as_werkzeug_reads_it():
    body = b"\r\n" + _encode([("image", "a.png", b"png"), ("top_k", None, b"3")])
    assert _split(body) == _werkzeug(body) == ([("top_k", "3")], [("image", b"png")])


def test_fields_are_utf8_text_with_undecodable_bytes_replaced():
    body = _encode([("text", None, "7½".encode() + b"\xff")])
    assert _split(body) == _werkzeug(body) == ([("text", "7½\ufffd")], [])


PLAIN = _encode([("image", "a.png", b"png bytes"), ("top_k", None, b"3")])


@pytest.mark.parametrize("body, why", [
    (b"preamble\r\n" + PLAIN, "a preamble"),
    (PLAIN.replace(b"\r\n", b"\n"), "LF line breaks"),
    (PLAIN.replace(f"--{BOUNDARY}\r\n".encode(), f"--{BOUNDARY}  \r\n".encode()),
     "transport padding"),
    (PLAIN[: PLAIN.rindex(b"\r\n--")], "no closing delimiter"),
    (PLAIN.replace(b"; filename", b";\r\n\tfilename"), "a folded header line"),
    (_encode([("image", "a.png", b"x\n--" + BOUNDARY.encode() + b"\r\ny")]),
     "a delimiter after a lone LF inside a file"),
    (_encode([("top_k", None, b"3")]).replace(b'"top_k"\r\n',
                                              b'"top_k"\r\nContent-Type: text/plain\r\n'),
     "a field with a content type of its own"),
    (PLAIN.replace(b'name="top_k"', b"x"), "a part without a name"),
    (PLAIN.replace(b"Content-Disposition", b"X-Disposition"), "no Content-Disposition"),
])
def test_other_shapes_are_left_to_werkzeug(body, why):
    assert _split(body) is None, why


def test_a_boundary_that_is_not_ascii_is_left_to_werkzeug():
    assert _split(_encode([("top_k", None, b"3")], "bé"), "bé") is None


def test_bodies_over_a_limit_are_left_to_werkzeug_which_refuses_them():
    many = _encode([("image", f"{i}.png", b"x") for i in range(4)])
    assert _split(many, max_parts=3) is None
    long_field = _encode([("text", None, b"7" * 11)])
    assert _split(long_field, max_field_bytes=10) is None
    with pytest.raises(RequestEntityTooLarge):
        MultiPartParser(max_form_parts=3).parse(io.BytesIO(many), BOUNDARY.encode(), None)


_PIECES = st.sampled_from([b"\r", b"\n", b"\r\n", b"--", BOUNDARY.encode(), b"-", b" ", b"x",
                           b"\x00", b"\xff", b"\r\n\r\n", b"\r\n--" + BOUNDARY.encode()])
_CONTENT = st.lists(_PIECES, max_size=8).map(b"".join)
_PART = st.tuples(st.sampled_from(["image", "top_k", "text", "é"]),
                  st.none() | st.sampled_from(["a.png", "", "x y.jpg"]), _CONTENT)


@given(st.lists(_PART, min_size=1, max_size=5))
def test_whatever_is_split_is_split_as_werkzeug_reads_it(parts):
    body = _encode(parts)
    split = _split(body)
    assert split is None or split == _werkzeug(body)
    if all(BOUNDARY.encode() not in content for _, _, content in parts):
        assert split is not None  # the plain shape is split here, not left to werkzeug


@given(st.lists(_PART, min_size=1, max_size=3), st.integers(0, 400), _CONTENT)
def test_a_body_with_bytes_put_in_anywhere_is_split_as_werkzeug_reads_it(parts, at, extra):
    body = _encode(parts)
    body = body[:at] + extra + body[at:]
    split = _split(body)
    if split is not None:
        assert split == _werkzeug(body)
