"""A user's folder of labelled images, read end to end like uploads: labels from a CSV or
from file names, accuracy by kind, the misreads and their contact sheet."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ocr_service.datasets import load_dataset, split_dataset
from ocr_service.image_eval import (
    LabelsError,
    accuracy_by_kind,
    format_readings,
    load_labelled_images,
    read_images,
    write_misread_sheet,
)
from ocr_service.predictor import Predictor
from ocr_testing.renderings import black_on_white_jpeg, white_on_black_png


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_path(None)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    images, labels = split_dataset(load_dataset("mnist5k"), seed=0, test_fraction=0.2).test
    picks = [int(np.flatnonzero(labels == c)[0]) for c in range(10)]
    return images[picks], labels[picks]


def _write_folder(root, digits, *, csv: bool, wrong: int | None = None):
    """Ten digit images (a JPEG scan and a PNG each), labelled by CSV or by file name;
    ``wrong`` gets a wrong label."""
    images, labels = digits
    rng = np.random.default_rng(0)
    rows = ["file,label,kind"]
    folder = root / "images" if csv else root
    folder.mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        told = (label + 1) % 10 if i == wrong else label
        for kind, render, suffix in (("scan", black_on_white_jpeg, "jpg"),
                                     ("canvas", white_on_black_png, "png")):
            name = f"{told}_{kind}{i}.{suffix}"
            (folder / name).write_bytes(render(image, rng))
            rows.append(f"{name},{told},{kind}")
    if csv:
        (root / "labels.csv").write_text("\n".join(rows) + "\n")


def test_labels_come_from_the_csv_with_kinds_and_an_images_folder(tmp_path, digits):
    _write_folder(tmp_path, digits, csv=True)
    images = load_labelled_images(tmp_path)
    assert len(images) == 20 and {i.kind for i in images} == {"scan", "canvas"}
    assert all(i.path.parent.name == "images" and i.path.name.startswith(i.label)
               for i in images)


def test_labels_come_from_file_names_without_a_csv(tmp_path, digits):
    _write_folder(tmp_path, digits, csv=False)
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_labelled_images(tmp_path)
    assert len(images) == 20 and all(i.kind == "" for i in images)
    assert sorted({i.label for i in images}) == [str(d) for d in range(10)]


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "no labelled images"),
    (lambda root: (root / "labels.csv").write_text("name,digit\na.png,1\n"), "columns"),
    (lambda root: (root / "labels.csv").write_text("file,label\nmissing.png,1\n"), "missing"),
])
def test_a_folder_without_usable_labels_is_a_labels_error(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(LabelsError, match=message):
        load_labelled_images(tmp_path)
    with pytest.raises(LabelsError, match="not a folder"):
        load_labelled_images(tmp_path / "nowhere")


def test_images_are_read_like_uploads_and_scored_by_kind(tmp_path, digits, predictor):
    _write_folder(tmp_path, digits, csv=True, wrong=3)
    readings = read_images(predictor, load_labelled_images(tmp_path))
    by_kind = accuracy_by_kind(readings)
    assert list(by_kind) == ["scan", "canvas", "all"]
    assert by_kind["all"] == (18, 20) and by_kind["scan"] == (9, 10)
    misread = [r for r in readings if not r.right]
    assert {r.image.label for r in misread} == {"4"}  # a 3 labelled 4, both renderings
    assert all(r.text == "3" for r in misread)
    report = format_readings(readings)
    assert "all: 18/20 read right (90.0%)" in report and "'4' read as '3'" in report


def test_a_refused_image_counts_as_misread_with_its_error(tmp_path, predictor):
    Image.new("L", (64, 64), 255).save(tmp_path / "5_blank.png")
    (reading,) = read_images(predictor, load_labelled_images(tmp_path))
    assert not reading.right and reading.text == "<no_ink>"


def test_the_contact_sheet_shows_every_misread_image(tmp_path, digits, predictor):
    _write_folder(tmp_path / "data", digits, csv=True, wrong=3)
    readings = read_images(predictor, load_labelled_images(tmp_path / "data"))
    sheet = write_misread_sheet(readings, tmp_path / "report" / "misread.png")
    with Image.open(sheet) as image:
        assert image.height >= 2 * 160  # a row per misread image
    right = [r for r in readings if r.right]
    assert write_misread_sheet(right, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
