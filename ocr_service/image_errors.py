"""What can be wrong with an upload: one exception class per HTTP status and stable code.

Raised by decoding (``preprocess``), ink analysis (``ink``) and segmentation; ``app.py``
maps any ``ImageError`` to its JSON error.
"""

from __future__ import annotations

__all__ = [
    "CorruptImageError",
    "ImageError",
    "ImageTooLargeError",
    "NoInkError",
    "TooManyCharactersError",
    "UnsupportedImageError",
]


class ImageError(Exception):
    """An upload that cannot be turned into a model input; carries its HTTP status and code."""

    status = 400
    code = "bad_image"


class CorruptImageError(ImageError):
    status = 400
    code = "bad_image"


class ImageTooLargeError(ImageError):
    status = 413
    code = "too_large"


class UnsupportedImageError(ImageError):
    status = 415
    code = "unsupported_media_type"


class NoInkError(ImageError):
    status = 422
    code = "no_ink"


class TooManyCharactersError(ImageError):
    """More ink components or characters than one upload may hold (a cost limit)."""

    status = 422
    code = "too_many_characters"
