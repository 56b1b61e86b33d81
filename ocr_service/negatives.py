"""The non-character class: examples of what a wrong or missed cut looks like, and how the
class is set aside when a character is answered.

A recogniser trained only on single characters reads two touching characters ("10") or a
piece of one (the left half of a 0) as some character, often confidently, so the
segmenter cannot tell a right cut from a wrong one by the answers. Trained with these
examples as one extra class, the network puts its probability there instead, and the
predictor's split rule sees the difference. Every example is made from the training
images only and normalised exactly as an uploaded character is. The class itself is never
an answer (``among_classes``).
"""

from __future__ import annotations

import numpy as np

from .image_errors import ImageError
from .preprocess import crop_to_ink, normalize_character

__all__ = ["PAIR_FRACTION", "among_classes", "make_negatives"]

#: Share of touching pairs among the examples; the rest are fragments of one character.
PAIR_FRACTION = 0.6
_INK = 0.05  # model-input grey level below which a pixel is paper (anti-aliasing fringe)
_MAX_TRIES = 4  # draws per example before giving up on degenerate (nearly blank) images


def among_classes(probs: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities ``(..., n_classes)`` of the real classes given that the input is a
    character: the first ``n_classes`` outputs of ``probs (..., n_classes + 1)`` rescaled to
    sum to 1. Where the non-character output took everything (the classes underflowed to 0)
    they are uniform, which no calibrated threshold accepts."""
    classes = np.asarray(probs, dtype=np.float32)[..., :n_classes]
    total = classes.sum(axis=-1, keepdims=True)
    safe = np.where(total > 0, total, np.float32(1.0))
    return np.where(total > 0, classes / safe, np.float32(1.0 / n_classes)).astype(np.float32)


def _ink_crop(image: np.ndarray) -> np.ndarray:
    crop, _ = crop_to_ink(np.where(image > _INK, image, 0.0).astype(np.float32))
    return crop


def _touching_pair(left: np.ndarray, right: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two character crops side by side, overlapping by 0-2 columns, jittered vertically."""
    height = max(left.shape[0], right.shape[0])
    overlap = int(rng.integers(0, 3))
    overlap = min(overlap, left.shape[1] - 1, right.shape[1] - 1)
    canvas = np.zeros((height, left.shape[1] + right.shape[1] - overlap), np.float32)
    for crop, x0 in ((left, 0), (right, left.shape[1] - overlap)):
        centred = (height - crop.shape[0]) // 2 + int(rng.integers(-2, 3))
        y0 = min(max(centred, 0), height - crop.shape[0])
        region = canvas[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]]
        np.maximum(region, crop, out=region)
    return canvas


def _fragment(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The left or right 30-60% of a character's columns."""
    width = crop.shape[1]
    keep = max(2, round(rng.uniform(0.3, 0.6) * width))
    return crop[:, :keep] if rng.random() < 0.5 else crop[:, width - keep :]


def make_negatives(
    images: np.ndarray, count: int, scheme: str, rng: np.random.Generator
) -> np.ndarray:
    """``count`` non-character model inputs ``(count, H, W)`` float32 made from ``images``.

    ``images`` are model inputs of ``scheme`` ``(N, H, W)`` with ink = 1 (a training split);
    a share ``PAIR_FRACTION`` are two random images touching side by side, the rest a
    vertical slice of one. Deterministic for a given ``rng`` state.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if count and len(images) == 0:
        raise ValueError("no images to make non-character examples from")
    out = np.empty((count, *images.shape[1:]), np.float32)
    # A fragment needs a character wide enough to have telling parts (not a 1): 8 of
    # MNIST's 28 columns, proportionally fewer for smaller inputs.
    min_width = max(3, round(images.shape[2] * 8 / 28))
    made = tries = 0
    while made < count:
        tries += 1
        if tries > _MAX_TRIES * count + 100:
            raise ValueError("the images hold too little ink to make non-character examples")
        try:
            first = _ink_crop(images[rng.integers(len(images))])
            if rng.random() < PAIR_FRACTION:
                shape = _touching_pair(first, _ink_crop(images[rng.integers(len(images))]), rng)
            elif first.shape[1] >= min_width:
                shape = _fragment(first, rng)
            else:
                continue
            out[made] = normalize_character(shape, scheme)
        except ImageError:  # a blank image or a slice without ink
            continue
        made += 1
    return out
