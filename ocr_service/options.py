"""The options and the default size limit of a reading, defined once for the API, its
OpenAPI document, the settings, the predictor and ``ocr-predict``.

Pure constants (no imports), so the command line can read them without loading numpy.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_INCLUDE_INPUT", "DEFAULT_MAX_PIXELS", "DEFAULT_SEGMENT", "DEFAULT_TOP_K",
    "INCLUDE_INPUT_VALUES", "MIN_TOP_K", "SEGMENT_MODES"]

#: How an image is cut into characters: ``auto`` decides, ``single`` reads the whole image
#: as one character, ``multi`` splits it into characters, left to right, line by line.
SEGMENT_MODES = ("auto", "single", "multi")
DEFAULT_SEGMENT = "auto"
#: Alternatives per character: from ``MIN_TOP_K`` to the model's number of classes.
MIN_TOP_K = 1
DEFAULT_TOP_K = 3
#: Decoded image size limit in pixels (413 beyond it): the library's default, and the
#: service's (``OCR_MAX_PIXELS``).
DEFAULT_MAX_PIXELS = 16_000_000
#: ``include_input``: exactly these strings in every request form ("1": add each
#: character's normalised model input to the answer).
INCLUDE_INPUT_VALUES = ("0", "1")
DEFAULT_INCLUDE_INPUT = "0"
