"""Median in-process time to read one 28x28 PNG upload: decode, preprocess, segment, predict.

Target: < 2 ms. Uses one BLAS thread, as a serving worker does.

    python scripts/bench_predict.py [--model models/default] [--repeat 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from renderings import white_on_black_png  # noqa: E402

from ocr_service.datasets import load_dataset, split_dataset  # noqa: E402
from ocr_service.predictor import Predictor  # noqa: E402
from ocr_service.preprocess import decode_image, ink_from_gray, normalize_character  # noqa: E402


def _median_ms(fn, items: list, repeat: int) -> float:
    times = []
    for i in range(repeat):
        item = items[i % len(items)]
        start = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="artifact (default: shipped)")
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()

    predictor = Predictor.from_path(args.model)
    images, _ = split_dataset(load_dataset("mnist5k"), seed=0, test_fraction=0.2).test
    rng = np.random.default_rng(0)
    uploads = [white_on_black_png(image, rng) for image in images[:200]]
    grays = [decode_image(u) for u in uploads]
    inks = [ink_from_gray(g) for g in grays]
    inputs = [normalize_character(i, predictor.artifact.scheme).reshape(1, -1) for i in inks]
    network = predictor.artifact.network
    with threadpool_limits(1):
        for u in uploads[:50]:  # warm-up
            predictor.predict_bytes(u)
        rows = [
            ("decode (Pillow)", _median_ms(decode_image, uploads, args.repeat)),
            ("ink map", _median_ms(ink_from_gray, grays, args.repeat)),
            (
                "normalise",
                _median_ms(
                    lambda i: normalize_character(i, predictor.artifact.scheme), inks, args.repeat
                ),
            ),
            ("network", _median_ms(network.predict_proba_with_stats, inputs, args.repeat)),
            ("total: predict_bytes", _median_ms(predictor.predict_bytes, uploads, args.repeat)),
        ]
    print(
        f"Model `{predictor.artifact.name}` ({predictor.artifact.kind}), 28x28 PNG uploads, "
        f"median of {args.repeat}, 1 BLAS thread\n"
    )
    print("| Step | Median |")
    print("|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.3f} ms |")


if __name__ == "__main__":
    main()
