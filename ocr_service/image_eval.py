"""A folder of a user's own labelled images, read end to end as the service reads uploads.

Labels come from ``labels.csv`` (columns ``file`` and ``label``, optionally ``kind``; a file
is looked up beside the CSV, then in an ``images/`` folder there) or, without a CSV, from
file names: ``7.png`` and ``7_003.jpg`` are labelled ``7``. An image counts as read right
only when the whole text matches, line breaks included.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from .image_errors import ImageError
from .options import DEFAULT_SEGMENT
from .predictor import PredictionResult, Predictor

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageReading",
    "LabelledImage",
    "LabelsError",
    "accuracy_by_kind",
    "format_readings",
    "load_labelled_images",
    "read_images",
    "write_misread_sheet",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
_THUMB = 160  # px: the longer side of an image on the contact sheet
_INPUT = 56  # px: a normalised character input on the contact sheet (28x28 at 2x)


class LabelsError(ValueError):
    """The folder holds no labelled images, or its labels.csv is malformed."""


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: str
    kind: str = ""


@dataclass(frozen=True)
class ImageReading:
    """What the predictor made of one labelled image: its text, or the error it raised."""

    image: LabelledImage
    result: PredictionResult | None
    error: ImageError | None = None

    @property
    def text(self) -> str:
        """The text read, or ``<code>`` of the error (``<no_ink>``)."""
        return self.result.text if self.result is not None else f"<{self.error.code}>"

    @property
    def right(self) -> bool:
        return self.result is not None and self.result.text == self.image.label


def _from_csv(folder: Path, csv_path: Path) -> list[LabelledImage]:
    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"file", "label"} <= set(rows[0]):
        raise LabelsError(f"{csv_path} needs the columns file and label")
    images = []
    for row in rows:
        name = row["file"]
        path = next((p for p in (folder / name, folder / "images" / name) if p.is_file()), None)
        if path is None:
            raise LabelsError(f"{csv_path} names {name!r}, which is not in {folder}")
        images.append(LabelledImage(path, row["label"], row.get("kind") or ""))
    return images


def load_labelled_images(folder: str | Path) -> list[LabelledImage]:
    """The labelled images of ``folder``, in file order. Raises ``LabelsError``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LabelsError(f"{folder} is not a folder")
    csv_path = folder / "labels.csv"
    if csv_path.is_file():
        images = _from_csv(folder, csv_path)
    else:
        images = [
            LabelledImage(path, path.stem.split("_")[0])
            for path in sorted(folder.iterdir())
            if path.suffix.lower() in IMAGE_SUFFIXES and path.stem.split("_")[0]
        ]
    if not images:
        raise LabelsError(f"no labelled images in {folder} (see ocr-eval --help)")
    return images


def read_images(
    predictor: Predictor, images: Sequence[LabelledImage], *, segment: str = DEFAULT_SEGMENT
) -> list[ImageReading]:
    """Every image read by ``predictor`` exactly as an upload of its bytes is read."""
    readings = []
    for image in images:
        try:
            result = predictor.predict_bytes(image.path.read_bytes(), segment=segment)
        except ImageError as exc:
            readings.append(ImageReading(image, None, exc))
        else:
            readings.append(ImageReading(image, result))
    return readings


def accuracy_by_kind(readings: Sequence[ImageReading]) -> dict[str, tuple[int, int]]:
    """``{kind: (read right, images)}``, with ``"all"`` last; kinds in first-seen order."""
    right, total = Counter(), Counter()
    for r in readings:
        if r.image.kind:
            total[r.image.kind] += 1
            right[r.image.kind] += r.right
    total["all"], right["all"] = len(readings), sum(r.right for r in readings)
    return {kind: (right[kind], total[kind]) for kind in total}


def format_readings(readings: Sequence[ImageReading]) -> str:
    """Accuracy by kind, then one line per misread image."""
    lines = [f"{kind}: {right}/{total} read right ({right / total:.1%})"
             for kind, (right, total) in accuracy_by_kind(readings).items()]
    misread = [r for r in readings if not r.right]
    if misread:
        lines.append(f"misread ({len(misread)}):")
        lines += [f"  {r.image.path.name}: {r.image.label!r} read as {r.text!r}"
                  for r in misread]
    return "\n".join(lines)


def _thumbnail(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            thumb = ImageOps.exif_transpose(img).convert("RGB")
    except (OSError, ValueError, SyntaxError):
        return Image.new("RGB", (_THUMB, _THUMB), "lightgray")
    thumb.thumbnail((_THUMB, _THUMB))
    return thumb


def _inputs_strip(result: PredictionResult | None) -> Image.Image | None:
    """The normalised inputs the network saw, side by side (white ink on black)."""
    if result is None or not result.characters:
        return None
    tiles = [np.clip(c.model_input, 0.0, 1.0) for c in result.characters]
    strip = np.concatenate(tiles, axis=1)
    image = Image.fromarray((strip * 255).astype(np.uint8), mode="L")
    return image.resize((_INPUT * len(tiles), _INPUT), Image.Resampling.NEAREST)


def write_misread_sheet(readings: Sequence[ImageReading], out: Path) -> Path | None:
    """A contact sheet PNG of every misread image, what was read, the truth and the
    normalised inputs the network saw; ``None`` when nothing was misread."""
    misread = [r for r in readings if not r.right]
    if not misread:
        return None
    rows = []
    for r in misread:
        thumb, strip = _thumbnail(r.image.path), _inputs_strip(r.result)
        width = _THUMB + 12 + max(strip.width if strip else 0, 320)
        row = Image.new("RGB", (width, _THUMB + 8), "white")
        row.paste(thumb, (4, 4))
        draw = ImageDraw.Draw(row)
        draw.text((_THUMB + 8, 6), r.image.path.name, fill="black")
        draw.text((_THUMB + 8, 22), f"true {r.image.label!r}   read {r.text!r}", fill="darkred")
        if strip is not None:
            row.paste(strip, (_THUMB + 8, 44))
        rows.append(row)
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)),
                      "white")
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
