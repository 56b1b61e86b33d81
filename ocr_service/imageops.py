"""The image operations the reading path is built from, done by OpenCV.

Morphology, connected components with their boxes, and resizing, on float32 arrays (or
bool masks for labelling). One module, so that the pipeline states *what* it does
(``opening(x, 31)``) and the OpenCV calling conventions (kernels, border modes, labelling
algorithm) are settled once.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "decode", "dilate", "distance", "erode", "grey", "label", "median", "opening", "resize",
    "smooth1d",
]

# A worker reads one upload per thread and the service runs a worker per core: OpenCV's
# own thread pool would only oversubscribe the cores (as a multi-threaded BLAS does).
cv2.setNumThreads(1)
# A damaged upload is the client's error, answered as one (``image_errors``); OpenCV would
# also log it, at warning and error level, once per decoder step that gives up.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

_SQUARES: dict[int, np.ndarray] = {}
_TO_GREY = {3: cv2.COLOR_BGR2GRAY, 4: cv2.COLOR_BGRA2GRAY}


def decode(data: bytes) -> np.ndarray | None:
    """The pixels of encoded image ``data`` as stored: (H, W) grey or (H, W, 3|4) BGR(A),
    8-bit for 8-bit images; None when OpenCV cannot decode them."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def grey(pixels: np.ndarray) -> np.ndarray:
    """Luma (H, W) uint8 of 8-bit BGR or BGRA ``pixels`` (H, W, 3|4), alpha ignored (ITU-R
    601, as Pillow's ``convert("L")`` weighs the colours, give or take a level)."""
    return cv2.cvtColor(pixels, _TO_GREY[pixels.shape[2]])


def _square(size: int) -> np.ndarray:
    kernel = _SQUARES.get(size)
    if kernel is None:
        kernel = _SQUARES.setdefault(size, np.ones((size, size), np.uint8))
    return kernel


def erode(image: np.ndarray, size: int) -> np.ndarray:
    """Minimum of every pixel's ``size`` x ``size`` square (odd ``size``) of ``image``
    (H, W) float32 or uint8, edges repeated outwards; a new array."""
    return cv2.erode(image, _square(size), borderType=cv2.BORDER_REPLICATE)


def dilate(image: np.ndarray, size: int) -> np.ndarray:
    """Maximum of every pixel's ``size`` x ``size`` square, as ``erode`` takes the minimum."""
    return cv2.dilate(image, _square(size), borderType=cv2.BORDER_REPLICATE)


def opening(image: np.ndarray, size: int) -> np.ndarray:
    """Grey opening (``erode`` then ``dilate``) of ``image`` (H, W) by a ``size`` square:
    what is left when every bright structure narrower than the square is taken away."""
    return cv2.morphologyEx(image, cv2.MORPH_OPEN, _square(size),
                            borderType=cv2.BORDER_REPLICATE)


def distance(mask: np.ndarray, *, beyond: bool = False) -> np.ndarray:
    """Distance (H, W) float32, in pixels, from every pixel of ``mask`` (H, W) bool to the
    nearest pixel outside it (0 outside; a 3x3 approximation of the Euclidean distance).
    What lies beyond the array's edges is outside the mask, or with ``beyond`` inside it
    (a mask of all True is then infinitely far from the outside: float32's maximum)."""
    pixels = np.ascontiguousarray(mask).view(np.uint8)
    if beyond:  # OpenCV's own convention
        return cv2.distanceTransform(pixels, cv2.DIST_L2, 3)
    framed = cv2.copyMakeBorder(pixels, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    return cv2.distanceTransform(framed, cv2.DIST_L2, 3)[1:-1, 1:-1]


def median(image: np.ndarray, size: int) -> np.ndarray:
    """Median of every pixel's ``size`` x ``size`` square (odd ``size``) of ``image`` (H, W)
    float32 in [0, 1], edges repeated outwards: float32, in steps of 1/255 (OpenCV takes
    medians over windows wider than 5 on 8-bit images only)."""
    levels = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    return cv2.medianBlur(levels, size).astype(np.float32) * np.float32(1.0 / 255.0)


def label(mask: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """8-connected components of ``mask`` (H, W) bool.

    Returns labels (H, W) int32 numbered 1..n in raster order of each component's first
    pixel (0: background), n, and boxes (n + 1, 4) int32 ``(x, y, w, h)`` in pixels (row 0,
    the background's, all 0). Wu's scan-order algorithm (SAUF) numbers components as
    ``scipy.ndimage.label`` does; the block-based default would not.
    """
    if mask.size == 0:  # OpenCV refuses empty images
        return np.zeros(mask.shape, np.int32), 0, np.zeros((1, 4), np.int32)
    n, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        np.ascontiguousarray(mask).view(np.uint8), 8, cv2.CV_32S, cv2.CCL_SAUF
    )
    stats[0] = 0
    return labels, n - 1, stats[:, :4]


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` (H, W) float32 resized to (``height``, ``width``): area averages when it
    shrinks both ways, bilinear otherwise (pixel centres aligned both ways)."""
    shrinking = width <= image.shape[1] and height <= image.shape[0]
    method = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=method)


def smooth1d(values: np.ndarray, size: int) -> np.ndarray:
    """Moving average (S,) float64 over ``size`` values of ``values`` (S,), centred (the
    window starts ``size // 2`` before), the ends mirrored."""
    row = np.ascontiguousarray(values, dtype=np.float64)[None, :]
    return cv2.blur(row, (size, 1), borderType=cv2.BORDER_REFLECT)[0]
