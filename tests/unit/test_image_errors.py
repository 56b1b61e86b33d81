"""The HTTP status and stable code of each upload error (the API's error contract)."""

from __future__ import annotations

import pytest

from ocr_service.image_errors import (
    CorruptImageError,
    ImageError,
    ImageTooLargeError,
    NoInkError,
    TooManyCharactersError,
    UnsupportedImageError,
)


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (CorruptImageError, 400, "bad_image"),
        (ImageTooLargeError, 413, "too_large"),
        (UnsupportedImageError, 415, "unsupported_media_type"),
        (NoInkError, 422, "no_ink"),
        (TooManyCharactersError, 422, "too_many_characters"),
    ],
)
def test_each_upload_error_has_its_status_and_code(error, status, code):
    exc = error("what went wrong")
    assert isinstance(exc, ImageError)
    assert (exc.status, exc.code, str(exc)) == (status, code, "what went wrong")


def test_a_narrower_error_keeps_its_parents_status_and_code():
    class BlankPageError(NoInkError):
        pass

    assert (BlankPageError.status, BlankPageError.code) == (422, "no_ink")
