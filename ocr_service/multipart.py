"""A multipart/form-data body held in memory, split into its fields and files.

werkzeug parses a form as a stream, event by event, building a header object, a file
object and a stream per part: that costs more per upload of a batch than reading a small
image does. An upload is in memory anyway (bounded by ``OCR_MAX_UPLOAD_BYTES``), so the
body is split at its delimiters instead. Only the plain shape that clients send is split
here: CRLF line breaks, no preamble (an empty first line at most), no transport padding, a
closing delimiter, every part named in a ``Content-Disposition`` header, fields without a
content type of their own, no more parts and no longer fields than the limits.
``split_form`` returns None for anything else, and the caller hands that body to werkzeug,
whose answer (or refusal) stands. Where both read a body they give the same fields and files
(``tests/unit/test_multipart.py``).
"""

from __future__ import annotations

from werkzeug.datastructures import MultiDict
from werkzeug.http import parse_options_header

__all__ = ["split_form"]

_CRLF = b"\r\n"


def _part_headers(block: bytes) -> dict[str, str] | None:
    """The header block's headers (lower-case names, the first of repeated ones), as
    werkzeug reads them; None for folded lines or line breaks other than CRLF."""
    if block.count(b"\r") != block.count(_CRLF) or block.count(b"\n") != block.count(_CRLF):
        return None
    try:
        lines = block.decode().split("\r\n")
    except UnicodeDecodeError:
        return None
    headers: dict[str, str] = {}
    for line in lines:
        if line[:1] in (" ", "\t"):
            return None
        line = line.strip(" \t")
        if line:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip(" \t").lower(), value.strip(" \t"))
    return headers


def split_form(
    body: bytes, boundary: str, *, max_parts: int | None, max_field_bytes: int | None
) -> tuple[MultiDict[str, str], MultiDict[str, bytes]] | None:
    """``(fields, files)`` of a multipart body: a part with a ``filename`` is a file (its
    bytes), any other a field (UTF-8 text, undecodable bytes replaced). None when the body
    is not of the plain shape described above or exceeds a limit: werkzeug decides then.
    """
    try:
        marker = b"--" + boundary.encode("ascii")
    except UnicodeEncodeError:
        return None
    if body.startswith(_CRLF + marker):  # an empty first line, as werkzeug's test client
        body = body[2:]
    if not boundary or not body.startswith(marker + _CRLF):
        return None
    pieces = (_CRLF + body).split(_CRLF + marker)
    # every "--boundary" must be a delimiter: werkzeug also takes one after a lone CR or LF
    if body.count(marker) != len(pieces) - 1 or not pieces[-1].startswith(b"--"):
        return None
    parts = pieces[1:-1]
    if max_parts is not None and len(parts) > max_parts:
        return None
    fields: MultiDict[str, str] = MultiDict()
    files: MultiDict[str, bytes] = MultiDict()
    for piece in parts:
        if not piece.startswith(_CRLF):  # padding after the boundary, or the closing one
            return None
        block, blank, content = piece[2:].partition(_CRLF + _CRLF)
        headers = _part_headers(block) if blank else None
        if headers is None or "content-disposition" not in headers:
            return None
        _, options = parse_options_header(headers["content-disposition"])
        name, filename = options.get("name"), options.get("filename")
        if name is None:
            return None
        if filename is not None:
            files.add(name, content)
        elif "content-type" in headers or (
            max_field_bytes is not None and len(content) > max_field_bytes
        ):
            return None
        else:
            fields.add(name, content.decode("utf-8", "replace"))
    return fields, files
