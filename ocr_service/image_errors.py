"""What can be wrong with an upload: one exception class per HTTP status and stable code.

Raised by decoding (``preprocess``), ink analysis (``ink``) and segmentation; ``app.py``
maps any ``ImageError`` to its JSON error.
"""

from __future__ import annotations

from .errors import CodedError

__all__ = [
    "CorruptImageError",
    "ImageError",
    "ImageTooLargeError",
    "NoInkError",
    "TooManyCharactersError",
    "UnsupportedImageError",
]


class ImageError(CodedError, status=400, code="bad_image"):
    """An upload that cannot be turned into a model input; carries its HTTP status and code.

    Each kind states both in its class line: ``class X(ImageError, status=..., code=...)``;
    a subclass without them keeps its parent's.
    """


class CorruptImageError(ImageError, status=400, code="bad_image"):
    """Empty bytes, or an allowed format's signature with data that does not decode."""


class ImageTooLargeError(ImageError, status=413, code="too_large"):
    """More pixels than the limit: refused from the header, before any decoding."""


class UnsupportedImageError(ImageError, status=415, code="unsupported_media_type"):
    """A recognisable image or document of a type that is not accepted (TIFF, PDF...)."""


class NoInkError(ImageError, status=422, code="no_ink"):
    """Nothing that reads as writing: a blank page, noise, too little contrast, specks."""


class TooManyCharactersError(ImageError, status=422, code="too_many_characters"):
    """More ink components or characters than one upload may hold (a cost limit)."""
