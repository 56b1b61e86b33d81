"""The input schemes a model may read: name -> (height, width) of its input images.

A module of its own (no numpy, no image libraries), so that code which only names the
schemes (argument parsers, artifact checks, dataset loaders) loads none of the image stack.
"""

from __future__ import annotations

__all__ = ["SCHEMES"]

SCHEMES = {"mnist": (28, 28), "optdigits": (8, 8)}
