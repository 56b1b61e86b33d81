"""Users' corrections kept as training data, in the ``folder`` dataset layout (no Flask here).

Under the feedback folder (``OCR_FEEDBACK_DIR``) every corrected character is three files,
named by the server (``<UTC time>-<random hex>``), in the sub-folder of its true label::

    DIR/<label>/<id>.png            the model input the served model read (ink dark on white)
    DIR/<label>/.crops/<id>.png     the character's crop of the upload, re-encoded
    DIR/<label>/.records/<id>.json  label, reading, box, model name and version, time, user tag

``ocr-train --dataset folder --data-dir DIR`` reads the visible PNGs as is (hidden files
are skipped); the visible file is renamed into place last, so a reader never sees a
character without its record. Writers of every worker process and thread take turns on
``DIR/.lock`` (``flock``), so the size cap holds under concurrent requests; ``DIR/.usage``
tallies the bytes used, and the files are counted again before a correction is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import CodedError
from .model_store import atomic_write
from .predictor import PredictionResult
from .preprocess import ANALYSIS_PIXELS, decode_scaled

__all__ = [
    "CROP_MAX_SIDE",
    "MAX_LABELS",
    "Correction",
    "CountMismatchError",
    "FeedbackError",
    "FeedbackStore",
    "StoreFullError",
    "StoreUnavailableError",
    "UnknownLabelError",
    "character_crops",
    "corrections_for",
    "parse_labels",
    "parse_user",
]

#: characters one correction may label (as many as segmentation may find in one upload)
MAX_LABELS = 128
#: longer side of a stored crop at most, in pixels: enough to see the writing again
CROP_MAX_SIDE = 512
_USER = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{16}$")
CROPS, RECORDS, TALLY = ".crops", ".records", ".usage"
#: age in seconds after which the usage tally is counted again from the files
TALLY_SECONDS = 60.0


class FeedbackError(CodedError, status=400, code="bad_parameter"):
    """A correction that is refused; ``status`` and ``code`` are its HTTP answer."""


class UnknownLabelError(FeedbackError, status=422, code="unknown_label"):
    """A true label that is not one of the served model's classes."""


class CountMismatchError(FeedbackError, status=422, code="count_mismatch"):
    """The true text has another number of characters than the model found in the image."""


class StoreFullError(FeedbackError, status=507, code="feedback_store_full"):
    """Storing the correction would take the folder over ``OCR_FEEDBACK_MAX_MB``."""


class StoreUnavailableError(FeedbackError, status=503, code="feedback_unavailable"):
    """The folder cannot be written (permissions, a file where a folder belongs...)."""


@dataclass(frozen=True)
class Correction:
    """One character: its true ``label``, the served model's reading and what it read.

    ``box`` is ``(x, y, w, h)`` in the upload's pixels; ``model_input`` (H, W) float32 with
    ink = 1; ``crop`` (h, w) float32 grey levels 0..1 of the upload in the box.
    """

    label: str
    read: str
    confidence: float
    box: tuple[int, int, int, int]
    model_input: np.ndarray
    crop: np.ndarray


def parse_labels(text: Any, classes: Sequence[str]) -> list[str]:
    """The true characters of ``text`` in reading order (white space separates nothing).

    Raises ``FeedbackError`` for a missing or non-string text, ``UnknownLabelError`` for a
    character that is not a class or cannot name a folder.
    """
    if not isinstance(text, str) or not text.strip():
        raise FeedbackError('"text" must be a non-empty string: what was actually written')
    labels = [c for c in text if not c.isspace()]
    if len(labels) > MAX_LABELS:
        raise FeedbackError(f'"text" has {len(labels)} characters; at most {MAX_LABELS}')
    known = set(classes)
    unknown = sorted({c for c in labels if c not in known or not _folder_safe(c)})
    if unknown:
        raise UnknownLabelError(
            f"{', '.join(map(repr, unknown))} not among the model's classes "
            f"({''.join(classes) if all(len(c) == 1 for c in classes) else len(classes)})"
        )
    return labels


def _folder_safe(label: str) -> bool:
    return label not in ("", ".", "..") and not label.startswith(".") and not any(
        c in label for c in "/\\\0"
    )


def parse_user(value: Any) -> str | None:
    """The optional ``user`` tag (1-64 of ``A-Za-z0-9._@-``) kept to find and delete one
    user's corrections; None when absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _USER.match(value):
        raise FeedbackError('"user" must be 1-64 characters of A-Z a-z 0-9 . _ @ -')
    return value


def character_crops(
    data: bytes, boxes: Sequence[tuple[int, int, int, int]], *, max_pixels: int
) -> list[np.ndarray]:
    """Grey crops (h, w) float32 of the upload at ``boxes`` (upload pixels), decoded as the
    predictor decodes (reduced to ``ANALYSIS_PIXELS``), longer side at most
    ``CROP_MAX_SIDE``."""
    gray, (sy, sx) = decode_scaled(data, max_pixels=max_pixels, work_pixels=ANALYSIS_PIXELS)
    crops = []
    for x, y, w, h in boxes:
        x0, y0 = int(x / sx), int(y / sy)
        x1, y1 = max(x0 + 1, int(np.ceil((x + w) / sx))), max(y0 + 1, int(np.ceil((y + h) / sy)))
        crop = gray[y0:y1, x0:x1]
        side = max(crop.shape)
        if side > CROP_MAX_SIDE:
            size = (max(1, round(crop.shape[1] * CROP_MAX_SIDE / side)),
                    max(1, round(crop.shape[0] * CROP_MAX_SIDE / side)))  # fmt: skip
            small = Image.fromarray(np.ascontiguousarray(crop)).resize(size, Image.Resampling.BOX)
            crop = np.asarray(small)
        crops.append(crop)
    return crops


def corrections_for(
    result: PredictionResult, labels: Sequence[str], data: bytes, *, max_pixels: int
) -> list[Correction]:
    """Pair the characters the model read in upload ``data`` with the true ``labels``, in
    reading order. Raises ``CountMismatchError`` when their numbers differ."""
    found = result.characters
    if len(found) != len(labels):
        raise CountMismatchError(
            f"the image reads as {len(found)} character(s) ({result.text!r}) but the text has "
            f"{len(labels)}: give one true character for each character read, in reading order"
        )
    crops = character_crops(data, [c.box for c in found], max_pixels=max_pixels)
    return [
        Correction(label, c.char, c.confidence, c.box, c.model_input, crop)
        for label, c, crop in zip(labels, found, crops, strict=True)
    ]


def _png(levels: np.ndarray) -> bytes:
    """8-bit grey PNG of grey levels (h, w) in 0..1."""
    buf = io.BytesIO()
    pixels = np.round(np.clip(levels, 0.0, 1.0) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _now() -> datetime:
    return datetime.now(timezone.utc)


class FeedbackStore:
    """The corrections folder ``root``, holding at most ``max_bytes`` of files."""

    def __init__(self, root: str | os.PathLike[str], max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    def used_bytes(self) -> int:
        """Bytes of every file under the folder (what the cap counts)."""
        total = 0
        for folder, _, files in os.walk(self.root):
            for name in files:
                with contextlib.suppress(OSError):  # removed meanwhile
                    total += os.stat(os.path.join(folder, name)).st_size
        return total

    def _tally(self) -> int:
        """Bytes used as of the last write (``DIR/.usage``, kept under the lock), so a write
        need not count every file; counted afresh when the tally is missing, unreadable or
        older than ``TALLY_SECONDS`` (files added or removed by hand)."""
        path = self.root / TALLY
        try:
            if time.time() - path.stat().st_mtime <= TALLY_SECONDS:
                return int(path.read_text(encoding="ascii"))
        except (OSError, ValueError):
            pass
        return self.used_bytes()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def add(
        self,
        corrections: Sequence[Correction],
        *,
        model: dict[str, str],
        user: str | None = None,
        scheme: str,
    ) -> list[dict[str, Any]]:
        """Store every correction, or none; returns their records (``id``, ``label``...).

        Raises ``StoreFullError`` when the folder would exceed its cap (or the disk is full),
        ``StoreUnavailableError`` when it cannot be written.
        """
        created = _now()
        stamp = created.strftime("%Y%m%dT%H%M%SZ")
        items = []
        for c in corrections:
            record = {
                "id": f"{stamp}-{secrets.token_hex(8)}",
                "label": c.label,
                "read": c.read,
                "confidence": round(float(c.confidence), 6),
                "box": [int(v) for v in c.box],
                "model": dict(model),
                "scheme": scheme,
                "created": created.isoformat(timespec="seconds"),
                "user": user,
            }
            files = {
                Path(c.label, CROPS, record["id"] + ".png"): _png(c.crop),
                Path(c.label, RECORDS, record["id"] + ".json"): json.dumps(record).encode(),
                Path(c.label, record["id"] + ".png"): _png(1.0 - c.model_input),
            }
            items.append((record, files))
        incoming = sum(len(data) for _, files in items for data in files.values())
        try:
            with self._locked():
                used = self._tally()
                if used + incoming > self.max_bytes:
                    used = self.used_bytes()  # refuse on a fresh count, not on the tally
                if used + incoming > self.max_bytes:
                    raise StoreFullError(
                        f"the feedback store is full ({used} of {self.max_bytes} bytes used); "
                        "corrections are not accepted until an operator makes room"
                    )
                self._write_all([files for _, files in items])
                atomic_write(self.root / TALLY, str(used + incoming).encode())
        except OSError as exc:
            if exc.errno in (28, 122):  # ENOSPC, EDQUOT: the disk, not the cap, is full
                raise StoreFullError("no space left for corrections on the server") from None
            raise StoreUnavailableError("corrections cannot be stored on this server") from exc
        return [record for record, _ in items]

    def _write_all(self, batches: list[dict[Path, bytes]]) -> None:
        """Write every file (each atomically); on failure remove what this call wrote."""
        written: list[Path] = []
        try:
            for files in batches:
                for relative, data in files.items():
                    target = self.root / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write(target, data)
                    written.append(target)
        except BaseException:
            for path in written:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise

    def _record_files(self) -> Iterator[Path]:
        return self.root.glob(f"*/{RECORDS}/*.json")

    def records(self) -> Iterator[dict[str, Any]]:
        """Every stored correction's record, in no particular order."""
        for path in self._record_files():
            with contextlib.suppress(OSError, ValueError):
                yield json.loads(path.read_text(encoding="utf-8"))

    def forget(self, *, user: str | None = None, ids: Sequence[str] = ()) -> int:
        """Delete the corrections tagged ``user`` and those with the given ``ids`` (all three
        files of each); returns how many were deleted. Raises ValueError for a malformed id."""
        wanted = set(ids)
        bad = sorted(i for i in wanted if not _ID.match(i))
        if bad:
            raise ValueError(f"not a correction id: {bad[0]!r}")
        removed = 0
        with self._locked():
            for path in list(self._record_files()):
                name, folder = path.stem, path.parent.parent  # paths from the layout only
                if name not in wanted and (user is None or _user_of(path) != user):
                    continue
                for file in (folder / f"{name}.png", folder / CROPS / f"{name}.png", path):
                    with contextlib.suppress(FileNotFoundError):
                        file.unlink()
                removed += 1
            with contextlib.suppress(FileNotFoundError):
                (self.root / TALLY).unlink()  # the next write counts afresh
        return removed


def _user_of(record_path: Path) -> str | None:
    try:
        return json.loads(record_path.read_text(encoding="utf-8")).get("user")
    except (OSError, ValueError, AttributeError):
        return None
