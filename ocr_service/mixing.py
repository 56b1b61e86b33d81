"""Several training sources as one: shared classes, a split per source, oversampling.

A source is written ``NAME``, ``NAME:DIR`` or either with ``*N`` appended (``folder:
feedback*8``): its training images count N times in every epoch (with ``--augment`` each
copy is distorted anew). Each source is split on its own, stratified per class, with the same
seed as a single source would be: ``mnist5k``'s held-out images are the same whether it is
trained alone or mixed, and every source's held-out part is reported separately.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .datasets import DATASET_NAMES, Dataset, DatasetError, load_dataset, split_dataset

__all__ = ["Mixed", "SourceSpec", "load_mixed", "parse_source"]

#: most times one source's training images may count in an epoch
MAX_WEIGHT = 1000
_SPEC = re.compile(r"^(?P<name>[a-z0-9]+)(?::(?P<dir>.+?))?(?:\*(?P<weight>\d+))?$")


@dataclass(frozen=True)
class SourceSpec:
    """One source: dataset ``name``, its folder (idx, folder, openml cache) and weight."""

    name: str
    data_dir: Path | None = None
    weight: int = 1

    @property
    def label(self) -> str:
        """How reports name it: ``mnist5k``, or ``folder:<folder name>``."""
        return f"{self.name}:{self.data_dir.name}" if self.data_dir else self.name


def parse_source(text: str) -> SourceSpec:
    """``NAME[:DIR][*N]`` -> SourceSpec; ValueError naming the choices for anything else."""
    match = _SPEC.match(text.strip())
    if not match or match["name"] not in DATASET_NAMES:
        raise ValueError(
            f"invalid choice: {text!r} (choose from {', '.join(DATASET_NAMES)}, as NAME, "
            "NAME:DIR or either with *N to count its images N times)"
        )
    weight = int(match["weight"] or 1)
    if not 1 <= weight <= MAX_WEIGHT:
        raise ValueError(f"the weight of {text!r} must be in 1..{MAX_WEIGHT}")
    return SourceSpec(match["name"], Path(match["dir"]) if match["dir"] else None, weight)


@dataclass(frozen=True)
class Mixed:
    """The sources' splits concatenated, labels indexing ``classes``.

    ``train`` and ``val`` hold each source's images ``weight`` times; ``tests`` the held-out
    split of each source by its label; images are (n, H, W) float32, labels (n,) int64.
    """

    classes: list[str]
    scheme: str
    name: str
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    tests: dict[str, tuple[np.ndarray, np.ndarray]]
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)


def _class_map(ds: Dataset, classes: list[str], label: str) -> np.ndarray:
    """(C_ds,) int64: the index in ``classes`` of each of ``ds``'s classes."""
    unknown = [c for c in ds.classes if c not in classes]
    if unknown:
        raise DatasetError(f"{label} has classes the model does not know: {unknown}")
    return np.array([classes.index(c) for c in ds.classes], np.int64)


def _load_all(specs: list[SourceSpec], scheme: str | None) -> list[Dataset]:
    """Every source's dataset, all in one input scheme; DatasetError otherwise."""
    if not specs:
        raise DatasetError("no dataset given")
    labels = [spec.label for spec in specs]
    if len(set(labels)) != len(labels):
        raise DatasetError(f"a dataset is given twice: {labels}")
    datasets = []
    for spec in specs:
        kwargs = {"scheme": scheme} if scheme else {}
        if len(specs) > 1:
            kwargs["min_classes"] = 1  # one class of corrections is fine beside other sources
        datasets.append(load_dataset(spec.name, spec.data_dir, **kwargs))
    schemes = {ds.scheme for ds in datasets}
    if len(schemes) > 1:
        found = ", ".join(f"{spec.label} is {ds.scheme}" for spec, ds in zip(specs, datasets,
                                                                            strict=True))
        raise DatasetError(f"the datasets have different input schemes ({found})")
    return datasets


def load_mixed(
    specs: list[SourceSpec],
    *,
    seed: int,
    test_fraction: float,
    val_fraction: float,
    scheme: str | None = None,
    classes: list[str] | None = None,
) -> Mixed:
    """Load, split and combine ``specs`` (at least one).

    ``scheme`` is that of ``folder`` sources (default mnist); every source must end up in
    the same one. ``classes`` fixes the class list (a model to start from): a source with
    another class is an error. Without it, the classes are the first source's followed by
    any new ones of the next sources. Raises DatasetError with a one-line message.
    """
    datasets = _load_all(specs, scheme)
    if classes is None:
        classes = []
        for ds in datasets:
            classes += [c for c in ds.classes if c not in classes]
    parts: dict[str, list[np.ndarray]] = {"x": [], "y": [], "vx": [], "vy": []}
    tests, sizes = {}, {}
    for spec, ds in zip(specs, datasets, strict=True):
        try:
            splits = split_dataset(ds, seed=seed, test_fraction=test_fraction,
                                   val_fraction=val_fraction)
        except DatasetError as exc:
            raise DatasetError(f"{spec.label}: {exc}") from None
        to_mixed = _class_map(ds, classes, spec.label)
        # Validation weighs each source as training does: it picks the epoch that is kept,
        # and a few corrections among hundreds of general images would not count.
        for (images, labels), (x_key, y_key) in ((splits.train, ("x", "y")),
                                                 (splits.val, ("vx", "vy"))):
            parts[x_key].append(np.tile(images, (spec.weight, 1, 1)) if spec.weight > 1
                                else images)
            parts[y_key].append(np.tile(to_mixed[labels], spec.weight))
        tests[spec.label] = (splits.test[0], to_mixed[splits.test[1]])
        sizes[spec.label] = {"images": len(ds), "train": len(splits.train[1]),
                             "val": len(splits.val[1]),
                             "test": len(splits.test[1]), "weight": spec.weight}
    return Mixed(
        classes=list(classes),
        scheme=datasets[0].scheme,
        name="+".join(ds.name for ds in datasets),
        train=(_concat(parts["x"]), np.concatenate(parts["y"])),
        val=(_concat(parts["vx"]), np.concatenate(parts["vy"])),
        tests=tests,
        sizes=sizes,
    )


def _concat(images: list[np.ndarray]) -> np.ndarray:
    return images[0] if len(images) == 1 else np.concatenate(images)
