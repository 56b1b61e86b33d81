"""Mixing training sources: the spec syntax, class alignment, per-source splits, weights."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ocr_service.datasets import DatasetError, load_dataset, split_dataset
from ocr_service.mixing import SourceSpec, load_mixed, parse_source

SPLIT = {"seed": 0, "test_fraction": 0.2, "val_fraction": 0.1}


@pytest.mark.parametrize(("text", "spec"), [
    ("mnist5k", SourceSpec("mnist5k")),
    ("folder:/var/fb", SourceSpec("folder", Path("/var/fb"))),
    ("folder:/var/fb*8", SourceSpec("folder", Path("/var/fb"), 8)),
    ("digits*3", SourceSpec("digits", None, 3)),
    ("folder:C:/x:y", SourceSpec("folder", Path("C:/x:y"))),
])  # fmt: skip
def test_source_specs(text, spec):
    assert parse_source(text) == spec


@pytest.mark.parametrize(("text", "match"), [
    ("mnist", "invalid choice"), ("folder:x*0", "1..1000"), ("digits*1001", "1..1000"),
    ("", "invalid choice"),
])  # fmt: skip
def test_bad_source_specs(text, match):
    with pytest.raises(ValueError, match=match):
        parse_source(text)


def _folder(root: Path, shapes: dict[str, str], n: int = 10) -> Path:
    """Class sub-folders of ``n`` drawings each: "bar" or "ring"."""
    for name, shape in shapes.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            image = Image.new("L", (40, 40), 255)
            pen = ImageDraw.Draw(image)
            if shape == "bar":
                pen.line([(20 + i % 4, 5), (18, 35)], fill=0, width=4)
            else:
                pen.ellipse([8 + i % 3, 6, 32, 34], outline=0, width=4)
            image.save(root / name / f"{i}.png")
    return root


def test_one_source_is_split_exactly_as_before():
    mixed = load_mixed([SourceSpec("digits")], **SPLIT)
    ds = load_dataset("digits")
    splits = split_dataset(ds, **SPLIT)
    assert mixed.classes == ds.classes and mixed.name == "digits"
    for ours, theirs in ((mixed.train, splits.train), (mixed.val, splits.val),
                         (mixed.tests["digits"], splits.test)):  # fmt: skip
        assert np.array_equal(ours[0], theirs[0]) and np.array_equal(ours[1], theirs[1])


def test_a_weighted_folder_beside_digits(tmp_path):
    folder = _folder(tmp_path / "mine", {"7": "bar"})  # one class is enough beside others
    mixed = load_mixed([SourceSpec("digits"), SourceSpec("folder", folder, 4)],
                       scheme="optdigits", **SPLIT)  # fmt: skip
    digits = load_mixed([SourceSpec("digits")], **SPLIT)
    assert mixed.classes == digits.classes  # "7" is already a digit class
    size = mixed.sizes["folder:mine"]
    assert size == {"images": 10, "train": 7, "val": 1, "test": 2, "weight": 4}
    assert len(mixed.train[1]) == len(digits.train[1]) + 4 * 7
    assert (mixed.train[1][len(digits.train[1]):] == 7).all()
    # validation, which picks the epoch kept, weighs the folder as training does
    assert len(mixed.val[1]) == len(digits.val[1]) + 4 * 1
    assert (mixed.val[1][len(digits.val[1]):] == 7).all()
    assert mixed.tests["folder:mine"][1].tolist() == [7, 7]
    assert np.array_equal(mixed.tests["digits"][1], digits.tests["digits"][1])


def test_new_classes_are_appended_and_a_fixed_class_list_refuses_them(tmp_path):
    folder = _folder(tmp_path / "mine", {"x": "ring", "7": "bar"})
    mixed = load_mixed([SourceSpec("digits"), SourceSpec("folder", folder)],
                       scheme="optdigits", **SPLIT)  # fmt: skip
    assert mixed.classes == [*map(str, range(10)), "x"]
    assert set(mixed.tests["folder:mine"][1].tolist()) == {7, 10}
    with pytest.raises(DatasetError, match=r"folder:mine has classes the model does not know"):
        load_mixed([SourceSpec("folder", folder)], classes=[str(d) for d in range(10)],
                   scheme="optdigits", **SPLIT)  # fmt: skip


def test_sources_must_share_a_scheme_and_appear_once(tmp_path):
    folder = _folder(tmp_path / "mine", {"1": "bar"})
    with pytest.raises(DatasetError, match="different input schemes"):
        load_mixed([SourceSpec("digits"), SourceSpec("folder", folder)], **SPLIT)
    with pytest.raises(DatasetError, match="given twice"):
        load_mixed([SourceSpec("digits"), SourceSpec("digits", None, 2)], **SPLIT)
    with pytest.raises(DatasetError, match="no dataset"):
        load_mixed([], **SPLIT)


def test_a_source_too_small_to_split_is_named(tmp_path):
    folder = _folder(tmp_path / "mine", {"1": "bar", "2": "ring", "3": "bar"}, n=1)
    with pytest.raises(DatasetError, match=r"^folder:mine: class '1' has only 1 samples"):
        load_mixed([SourceSpec("digits"), SourceSpec("folder", folder)], scheme="optdigits",
                   **SPLIT)  # fmt: skip
