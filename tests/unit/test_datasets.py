"""Dataset loaders and the stratified split, on bundled data and small files written here."""

from __future__ import annotations

import gzip
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ocr_service.datasets import (
    FASHION_CLASSES,
    FASHION_MNIST_DIR,
    Dataset,
    DatasetError,
    load_dataset,
    split_dataset,
)

DIGITS = [str(d) for d in range(10)]


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> Path:
    """Write a uint8 array as an IDX file (magic 0x0000 08 <ndim>, big-endian dims, data)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def random_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def write_mnist_set(folder: Path, *, compress: bool = False, n_train: int = 30, n_test: int = 10):
    folder.mkdir(parents=True, exist_ok=True)
    parts = {"train": (random_images(n_train, 1), np.arange(n_train) % 10),
             "t10k": (random_images(n_test, 2), np.arange(n_test)[::-1] % 10)}  # fmt: skip
    for part, (images, labels) in parts.items():
        write_idx(folder / f"{part}-images-idx3-ubyte", images, compress=compress)
        write_idx(folder / f"{part}-labels-idx1-ubyte", labels, compress=compress)
    return parts


# --- bundled datasets ------------------------------------------------------------------------


def test_digits_are_8x8_optdigits_scaled_to_unit_range():
    ds = load_dataset("digits")
    assert ds.images.shape == (1797, 8, 8) and ds.images.dtype == np.float32
    assert ds.images.min() == 0.0 and ds.images.max() == 1.0
    assert ds.scheme == "optdigits" and ds.classes == DIGITS and ds.labels.dtype == np.int64
    assert np.bincount(ds.labels).min() >= 170  # roughly balanced, 174..183 per digit
    assert set(np.unique(ds.images * 16)) <= set(range(17))  # counts of 16 pixels per block


def test_digits_are_scikit_learns_load_digits_read_without_importing_it():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ds = load_dataset("digits")
    assert np.array_equal(ds.images * 16, bunch.images) and np.array_equal(ds.labels, bunch.target)


def test_mnist5k_is_5000_real_28x28_digits_with_ink_bright():
    ds = load_dataset("mnist5k")
    assert ds.images.shape == (5000, 28, 28) and ds.images.dtype == np.float32
    assert ds.scheme == "mnist" and ds.classes == DIGITS and ds.name == "mnist5k"
    assert np.bincount(ds.labels).tolist() == [500] * 10
    assert ds.images.min() == 0.0 and ds.images.max() == 1.0
    # MNIST digits are dark background with bright ink centred in the field.
    assert 0.08 < ds.images.mean() < 0.2
    assert ds.images[:, 10:18, 10:18].mean() > 5 * ds.images[:, :4, :].mean()


def test_loaders_hand_out_independent_arrays():
    first = load_dataset("mnist5k")
    first.images[:] = 0.5
    first.labels[:] = 3
    again = load_dataset("mnist5k")
    assert again.images.max() == 1.0 and np.bincount(again.labels).tolist() == [500] * 10


def test_unknown_name_and_missing_dir_are_one_line_errors(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'emnist'"):
        load_dataset("emnist")
    with pytest.raises(DatasetError, match="needs --data-dir"):
        load_dataset("idx")
    with pytest.raises(DatasetError, match="is not a folder"):
        load_dataset("folder", tmp_path / "nope")


# --- split -----------------------------------------------------------------------------------


def test_split_is_deterministic_stratified_and_disjoint():
    ds = load_dataset("mnist5k")
    a, b = split_dataset(ds, seed=0), split_dataset(ds, seed=0)
    for key in ("train", "val", "test"):
        assert np.array_equal(a.index[key], b.index[key])
    assert np.array_equal(a.test[0], ds.images[a.index["test"]])
    assert np.array_equal(a.test[1], ds.labels[a.index["test"]])
    # The 1,000 held-out images: 100 per digit; validation 500; everything used exactly once.
    assert np.bincount(a.test[1]).tolist() == [100] * 10
    assert np.bincount(a.val[1]).tolist() == [50] * 10
    rows = np.concatenate([a.index["train"], a.index["val"], a.index["test"]])
    assert np.array_equal(np.sort(rows), np.arange(len(ds)))
    assert not np.array_equal(split_dataset(ds, seed=1).index["test"], a.index["test"])


def test_test_split_does_not_depend_on_val_fraction():
    ds = load_dataset("digits")
    tests = [split_dataset(ds, seed=7, val_fraction=v).index["test"] for v in (0.0, 0.1, 0.3)]
    assert all(np.array_equal(t, tests[0]) for t in tests)
    assert len(tests[0]) == round(0.2 * len(ds))
    counts = np.bincount(ds.labels)
    per_class = np.bincount(ds.labels[tests[0]])
    assert np.all(np.abs(per_class - 0.2 * counts) < 1)


def tiny_dataset(counts: list[int]) -> Dataset:
    labels = np.repeat(np.arange(len(counts)), counts)
    images = np.zeros((len(labels), 8, 8), np.float32)
    return Dataset(images, labels, [str(i) for i in range(len(counts))], "optdigits", "tiny")


def test_every_class_reaches_every_split_or_the_split_is_refused():
    splits = split_dataset(tiny_dataset([3, 40]), seed=0)
    for _, labels in (splits.train, splits.val, splits.test):
        assert set(labels.tolist()) == {0, 1}
    with pytest.raises(DatasetError, match="class '0' has only 2 samples"):
        split_dataset(tiny_dataset([2, 40]), seed=0)
    assert len(split_dataset(tiny_dataset([2, 40]), seed=0, val_fraction=0).val[1]) == 0


@pytest.mark.parametrize(("test", "val"), [(1.0, 0.0), (-0.1, 0.1), (0.6, 0.5)])
def test_bad_fractions_are_refused(test, val):
    with pytest.raises(DatasetError, match="bad split fractions"):
        split_dataset(tiny_dataset([20, 20]), test_fraction=test, val_fraction=val)


# --- IDX -------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_idx_folder_concatenates_train_and_t10k(tmp_path, compress):
    parts = write_mnist_set(tmp_path / "mnist", compress=compress)
    ds = load_dataset("idx", tmp_path / "mnist")
    images = np.concatenate([parts["train"][0], parts["t10k"][0]])
    labels = np.concatenate([parts["train"][1], parts["t10k"][1]])
    assert ds.images.shape == (40, 28, 28) and ds.images.dtype == np.float32
    np.testing.assert_allclose(ds.images, images / 255, rtol=1e-6)
    assert ds.labels.tolist() == labels.tolist() and ds.classes == DIGITS
    assert ds.scheme == "mnist" and ds.name == "mnist"
    assert ds.official_test_mask.tolist() == [False] * 30 + [True] * 10

    official = split_dataset(ds, seed=0, val_fraction=0.25, official_test=True)
    assert official.index["test"].tolist() == list(range(30, 40))
    assert len(official.val[1]) == 10 and len(official.train[1]) == 20


def test_official_test_split_needs_a_source_that_has_one():
    with pytest.raises(DatasetError, match="no official test split"):
        split_dataset(load_dataset("digits"), official_test=True)


def test_fashion_folder_gets_clothing_names_and_classes_txt_overrides(tmp_path):
    write_mnist_set(tmp_path / "Fashion-MNIST", n_test=0)
    assert load_dataset("idx", tmp_path / "Fashion-MNIST").classes == list(FASHION_CLASSES)
    write_mnist_set(tmp_path / "kmnist")
    names = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
    (tmp_path / "kmnist" / "classes.txt").write_text("\n".join(names) + "\n")
    assert load_dataset("idx", tmp_path / "kmnist").classes == names


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_debian_fashion_mnist_package_loads():
    ds = load_dataset("idx", FASHION_MNIST_DIR)
    assert ds.images.shape == (70_000, 28, 28) and ds.classes == list(FASHION_CLASSES)
    assert int(ds.official_test_mask.sum()) == 10_000
    assert np.bincount(ds.labels).tolist() == [7000] * 10


def test_emnist_is_transposed_back_and_named_by_its_mapping(tmp_path):
    upright = np.zeros((3, 28, 28), np.uint8)
    upright[:, 2, 5:20] = 255  # a horizontal bar near the top: not symmetric under transpose
    upright[1, 10, 10] = 128
    folder = tmp_path / "emnist"
    folder.mkdir()
    write_idx(
        folder / "emnist-letters-train-images-idx3-ubyte", upright.transpose(0, 2, 1), compress=True
    )
    write_idx(folder / "emnist-letters-train-labels-idx1-ubyte", np.array([2, 1, 3]), compress=True)
    write_idx(folder / "emnist-letters-test-images-idx3-ubyte", upright[:1].transpose(0, 2, 1))
    write_idx(folder / "emnist-letters-test-labels-idx1-ubyte", np.array([3]))
    (folder / "emnist-letters-mapping.txt").write_text("1 65 97\n2 66 98\n3 67 99\n")

    ds = load_dataset("idx", folder)
    np.testing.assert_allclose(ds.images[:3], upright / 255, rtol=1e-6)
    assert ds.images[0, 2, 10] == 1.0 and ds.images[0, 10, 2] == 0.0
    assert ds.classes == ["A", "B", "C"] and ds.labels.tolist() == [1, 0, 2, 2]
    assert ds.name == "emnist-letters" and ds.official_test_mask.tolist() == [0, 0, 0, 1]

    (folder / "emnist-letters-mapping.txt").unlink()
    with pytest.raises(DatasetError, match=r"emnist-letters-mapping\.txt is missing"):
        load_dataset("idx", folder)


def idx_error(folder: Path) -> str:
    with pytest.raises(DatasetError) as info:
        load_dataset("idx", folder)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_magic_number_names_the_file(tmp_path):
    write_mnist_set(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", random_images(30, 3))  # images as labels
    message = idx_error(tmp_path)
    assert "train-labels-idx1-ubyte is not an IDX labels file" in message
    assert "0x00000803" in message and "0x00000801" in message


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_truncated_file_names_the_file(tmp_path, compress):
    write_mnist_set(tmp_path, compress=compress)
    name = "t10k-images-idx3-ubyte" + (".gz" if compress else "")
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[:-100])
    message = idx_error(tmp_path)
    assert name in message
    assert ("truncated" in message) if not compress else ("cannot read" in message)


def test_trailing_bytes_and_short_header_are_caught(tmp_path):
    write_mnist_set(tmp_path)
    with (tmp_path / "train-images-idx3-ubyte").open("ab") as f:
        f.write(b"\0")
    assert "corrupt (trailing bytes)" in idx_error(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    assert "header is incomplete" in idx_error(tmp_path)


def test_label_count_mismatch(tmp_path):
    write_mnist_set(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(9) % 10)
    assert "has 10 images but" in idx_error(tmp_path) and "has 9 labels" in idx_error(tmp_path)


def test_idx_folder_content_problems(tmp_path):
    assert "no IDX files" in idx_error(tmp_path)
    write_mnist_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    assert "has no matching test labels file" in idx_error(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(10, 12))
    assert "label 12" in idx_error(tmp_path)
    write_idx(tmp_path / "emnist-digits-train-images-idx3-ubyte", random_images(2, 0))
    assert "several IDX sets (emnist-digits, mnist)" in idx_error(tmp_path)


def test_idx_images_must_be_28x28(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 8, 8), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    assert "images are 8x8" in idx_error(tmp_path)


# --- OpenML ----------------------------------------------------------------------------------


def test_openml_offline_is_a_clear_one_line_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure\nin name resolution")

    # cut the network below the real fetch_openml, so its argument checks run too
    monkeypatch.setattr("sklearn.datasets._openml.urlopen", offline)
    with pytest.raises(DatasetError) as info:
        load_dataset("openml", tmp_path)
    message = str(info.value)
    assert message.startswith("cannot download mnist_784 from OpenML (offline?)")
    assert "\n" not in message and "name resolution" in message


def test_openml_rows_become_28x28_images(tmp_path, monkeypatch):
    from sklearn.utils import Bunch

    pixels = np.arange(3 * 784, dtype=np.float64).reshape(3, 784) % 256
    fetched = {}

    def fake_fetch(name, **kwargs):
        fetched.update(kwargs, name=name)
        return Bunch(data=pixels, target=np.array(["5", "0", "9"], dtype=object))

    monkeypatch.setattr("sklearn.datasets.fetch_openml", fake_fetch)
    ds = load_dataset("openml", tmp_path)
    assert fetched["name"] == "mnist_784" and fetched["data_home"] == tmp_path
    assert ds.images.shape == (3, 28, 28) and ds.labels.tolist() == [5, 0, 9]
    np.testing.assert_allclose(ds.images.reshape(3, 784), pixels / 255, rtol=1e-6)
    assert ds.official_test_mask is None  # only the full 70,000-image table has MNIST's order


# --- folder of images ------------------------------------------------------------------------


def draw_character(path: Path, shape: str, offset: int) -> None:
    """Dark ink on white paper, like a scan or photo of a handwritten character."""
    image = Image.new("L", (64, 64), 255)
    pen = ImageDraw.Draw(image)
    if shape == "line":
        pen.line([(32 + offset, 8), (30, 56)], fill=0, width=6)
    elif shape == "cross":
        pen.line([(10, 32), (54, 32)], fill=0, width=6)
        pen.line([(32, 10 + offset), (32, 54)], fill=0, width=6)
    else:
        pen.ellipse([12 + offset, 10, 52, 54], outline=0, width=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def make_class_folders(root: Path, classes: dict[str, str], n: int = 3) -> None:
    for name, shape in classes.items():
        for i in range(n):
            draw_character(root / name / f"{i}.png", shape, offset=2 * i)


@pytest.mark.parametrize(("scheme", "shape"), [("mnist", (28, 28)), ("optdigits", (8, 8))])
def test_folder_of_class_subfolders(tmp_path, scheme, shape):
    make_class_folders(tmp_path, {"A": "cross", "b": "circle", "7": "line", "+": "cross"})
    (tmp_path / "A" / ".DS_Store").write_bytes(b"\0\1junk")
    (tmp_path / ".thumbnails").mkdir()
    (tmp_path / "README.txt").write_text("my handwriting samples")

    ds = load_dataset("folder", tmp_path, scheme=scheme)
    assert ds.classes == ["+", "7", "A", "b"]  # sub-folder names, case-sensitive, sorted
    assert ds.images.shape == (12, *shape) and ds.images.dtype == np.float32
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert ds.scheme == scheme and ds.official_test_mask is None
    # Dark-on-white files become bright ink on a dark field, like every model input.
    assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
    assert all(img.max() > 0.5 and img.mean() < 0.5 for img in ds.images)
    assert not np.allclose(ds.images[0], ds.images[3])


def test_folder_problems_are_reported_with_the_file(tmp_path):
    with pytest.raises(DatasetError, match="found 0"):
        load_dataset("folder", tmp_path)
    make_class_folders(tmp_path, {"x": "cross"})
    with pytest.raises(DatasetError, match="found 1"):
        load_dataset("folder", tmp_path)
    (tmp_path / "y").mkdir()
    with pytest.raises(DatasetError, match=r"class folder .*y has no images"):
        load_dataset("folder", tmp_path)
    make_class_folders(tmp_path, {"y": "circle"})
    (tmp_path / "y" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match=r"y/notes\.txt"):
        load_dataset("folder", tmp_path)
    (tmp_path / "y" / "notes.txt").unlink()
    Image.new("L", (20, 20), 255).save(tmp_path / "y" / "blank.png")
    with pytest.raises(DatasetError, match=r"y/blank\.png: "):
        load_dataset("folder", tmp_path)
    (tmp_path / "y" / "blank.png").unlink()
    with pytest.raises(DatasetError, match="unknown input scheme 'emnist'"):
        load_dataset("folder", tmp_path, scheme="emnist")
    assert len(load_dataset("folder", tmp_path)) == 6


def test_a_folder_of_one_class_is_accepted_only_when_asked(tmp_path):
    make_class_folders(tmp_path, {"7": "line"})
    with pytest.raises(DatasetError, match="two or more"):
        load_dataset("folder", tmp_path)
    ds = load_dataset("folder", tmp_path, min_classes=1)  # beside other sources (mixing)
    assert ds.classes == ["7"] and len(ds) == 3
