"""Accuracy of a model on held-out MNIST digits uploaded the way users upload them.

The 1,000 held-out mnist5k test images (stratified split, seed 0) are rendered the ways of
``ocr_testing/renderings.py`` (uploads, then harder photographed captures: squared paper, chalk,
a sticky note, faint ballpoint, a hand's shadow, a table in a corner), and sent through
``Predictor.predict_bytes`` exactly as the API does; then strings of 4-6 held-out digits are
read, apart, with a fifth of the gaps closed until the digits touch, and in a row whose
baseline wobbles. Prints a Markdown table.

    python scripts/eval_renderings.py [--model models/default] [--strings 300]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from ocr_service.datasets import load_dataset, split_dataset
from ocr_service.image_errors import ImageError
from ocr_service.predictor import REJECT, Predictor
from ocr_testing.renderings import (
    CAPTURES,
    RENDERINGS,
    DigitString,
    render_string,
    render_wobbly,
)


def _read(predictor: Predictor, data: bytes) -> tuple[str, float]:
    """Recognised text (``""`` when the upload is refused) and the time it took in ms."""
    start = time.perf_counter()
    try:
        text = predictor.predict_bytes(data).text
    except ImageError:
        text = ""
    return text, (time.perf_counter() - start) * 1000.0


def evaluate_renderings(
    predictor: Predictor, images: np.ndarray, labels: np.ndarray, classes: list[str], seed: int
) -> list[tuple[str, float, float, float]]:
    """Per rendering: (name, accuracy, reject rate, median ms)."""
    rows = []
    for name, render in {**RENDERINGS, **CAPTURES}.items():
        rng = np.random.default_rng(seed)
        correct = rejected = 0
        times = []
        for image, label in zip(images, labels, strict=True):
            text, ms = _read(predictor, render(image, rng))
            times.append(ms)
            correct += text == classes[label]
            rejected += text in ("", REJECT)
        n = len(labels)
        rows.append((name, correct / n, rejected / n, statistics.median(times)))
    return rows


def evaluate_strings(
    predictor: Predictor,
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    count: int,
    seed: int,
    render: Callable[[np.ndarray, np.random.Generator], DigitString],
) -> tuple[float, float, float]:
    """(strings read completely right, digits right by position, boxes in reading order)
    of ``count`` strings of 4-6 digits laid out by ``render``."""
    rng = np.random.default_rng(seed)
    whole = digits_right = digits_total = ordered = 0
    for _ in range(count):
        idx = rng.choice(len(labels), size=int(rng.integers(4, 7)), replace=False)
        truth = "".join(classes[i] for i in labels[idx])
        rendered = render(images[idx], rng)
        try:
            result = predictor.predict_bytes(rendered.data)
        except ImageError:
            continue
        whole += result.text == truth
        digits_right += sum(a == b for a, b in zip(result.text, truth, strict=False))
        digits_total += len(truth)
        xs = [c.box[0] for c in result.characters]
        ordered += xs == sorted(xs)
    return whole / count, digits_right / max(digits_total, 1), ordered / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="artifact (default: shipped)")
    parser.add_argument("--strings", type=int, default=300, help="multi-digit strings to read")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    predictor = Predictor.from_path(args.model)
    test_images, test_labels = split_dataset(
        load_dataset("mnist5k"), seed=0, test_fraction=0.2
    ).test
    classes = predictor.artifact.classes
    with threadpool_limits(1):
        rows = evaluate_renderings(predictor, test_images, test_labels, classes, args.seed)
        layouts = {
            "apart": functools.partial(render_string, touching=0.0),
            "a fifth of the gaps touching": functools.partial(render_string, touching=0.2),
            "wobbling baseline (offsets up to 20 px of 28)": render_wobbly,
        }
        strings = [
            (name, *evaluate_strings(predictor, test_images, test_labels, classes,
                                     args.strings, args.seed, render))
            for name, render in layouts.items()
        ]
    print(
        f"Model `{predictor.artifact.name}` version {predictor.artifact.version}, "
        f"{len(test_labels)} held-out mnist5k images (never trained on)\n"
    )
    print("| Upload rendering | Accuracy | Refused or `?` | Median time |")
    print("|---|---:|---:|---:|")
    for name, accuracy, rejected, ms in rows:
        print(f"| {name} | {accuracy:.1%} | {rejected:.1%} | {ms:.1f} ms |")
    for name, whole, per_digit, ordered in strings:
        print(
            f"| {args.strings} strings of 4-6 digits, {name} | "
            f"{whole:.1%} (digits {per_digit:.1%}) | | boxes in order {ordered:.0%} |"
        )


if __name__ == "__main__":
    main()
