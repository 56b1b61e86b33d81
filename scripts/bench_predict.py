"""Median in-process time to read one 28x28 PNG upload: decode, preprocess, segment, predict.

Also the ink map and the whole reading of a 280x280 drawing-page canvas (an opaque RGBA PNG).

Also the cost per upload of ``Predictor.predict_many`` over a batch of 64 (what
``/v1/predict/batch`` calls), and the mean wall and CPU time per upload while two threads
call ``predict_bytes`` at once (as a worker's request threads do), taking turns as the
predictor makes character-sized readings do and, for comparison, not. Target: < 2 ms. Uses one BLAS
thread, as a serving worker does.
Every row is measured ``--rounds`` times, interleaved; the range is printed, since the
cores may be shared.

    python scripts/bench_predict.py [--model models/default] [--repeat 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from ocr_service import predictor as predictor_module
from ocr_service.datasets import load_dataset, split_dataset
from ocr_service.features import model_inputs
from ocr_service.ink import ink_from_gray, ink_marks_many
from ocr_service.predictor import Predictor
from ocr_service.preprocess import decode_image, normalize_character
from ocr_service.segment import segment_ink
from ocr_testing.renderings import drawn_seven, white_on_black_png

BATCH = 64  # the service's default batch cap (OCR_MAX_BATCH)
BATCH_ROW = f"predict_many over {BATCH} uploads, per upload"
INK_BATCH_ROW = f"ink map of {BATCH} images together (ink_marks_many), per image"
THREADED_ROWS = {
    True: ("2 threads at once, wall per upload", "2 threads at once, CPU per upload"),
    False: ("2 threads at once, no turns, wall per upload",
            "2 threads at once, no turns, CPU per upload"),
}


def _median_ms(fn, items: list, repeat: int) -> float:
    times = []
    for i in range(repeat):
        item = items[i % len(items)]
        start = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


@contextlib.contextmanager
def _turns(enabled: bool) -> Iterator[None]:
    """The predictor's turns for character-sized readings, or (False) none: what they save."""
    lock = predictor_module._TURNS
    if not enabled:
        predictor_module._TURNS = contextlib.nullcontext()  # type: ignore[assignment]
    try:
        yield
    finally:
        predictor_module._TURNS = lock


def _two_threads_ms(predictor: Predictor, uploads: list[bytes], repeat: int) -> tuple[float, float]:
    """Mean wall and CPU time (ms) per upload while two threads read ``repeat`` in all."""

    def read(offset: int) -> None:
        for i in range(repeat // 2):
            predictor.predict_bytes(uploads[(offset + i) % len(uploads)])

    threads = [threading.Thread(target=read, args=(k * len(uploads) // 2,)) for k in (0, 1)]
    cpu, wall = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    n = 2 * (repeat // 2)
    return (time.perf_counter() - wall) * 1000.0 / n, (time.process_time() - cpu) * 1000.0 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="artifact (default: shipped)")
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    predictor = Predictor.from_path(args.model)
    images, _ = split_dataset(load_dataset("mnist5k"), seed=0, test_fraction=0.2).test
    rng = np.random.default_rng(0)
    uploads = [white_on_black_png(image, rng) for image in images[:200]]
    grays = [decode_image(u) for u in uploads]
    inks = [ink_from_gray(g) for g in grays]
    characters = [normalize_character(i, predictor.artifact.scheme)[None] for i in inks]
    inputs = [model_inputs(c, predictor.artifact.features) for c in characters]
    segments = [segment_ink(i) for i in inks]
    network = predictor.artifact.network
    canvases = [drawn_seven(280, "RGBA")]
    canvas_grays = [decode_image(c) for c in canvases]
    batches = [uploads[i : i + BATCH] for i in range(0, len(uploads) - BATCH + 1, BATCH)]
    steps = {
        "decode (Pillow)": (decode_image, uploads),
        "ink map": (ink_from_gray, grays),
        "segment": (segment_ink, inks),
        "normalise": (lambda s: normalize_character(s[0].ink, predictor.artifact.scheme),
                      segments),
        f"inputs ({predictor.artifact.features})":
            (lambda c: model_inputs(c, predictor.artifact.features), characters),
        "network": (network.predict_proba_with_stats, inputs),
        "total: predict_bytes": (predictor.predict_bytes, uploads),
        "280x280 canvas: ink map": (ink_from_gray, canvas_grays),
        "280x280 canvas: total predict_bytes": (predictor.predict_bytes, canvases),
    }
    threaded = (row for pair in THREADED_ROWS.values() for row in pair)
    rows = [*steps, INK_BATCH_ROW, BATCH_ROW, *threaded]
    times: dict[str, list[float]] = {name: [] for name in rows}
    with threadpool_limits(1):
        for u in uploads[:50]:  # warm-up
            predictor.predict_bytes(u)
        for _ in range(args.rounds):
            for name, (fn, items) in steps.items():
                repeat = args.repeat if len(items) > 1 else max(20, args.repeat // 10)
                times[name].append(_median_ms(fn, items, repeat))
            per_batch = _median_ms(predictor.predict_many, batches, max(5, args.repeat // BATCH))
            times[BATCH_ROW].append(per_batch / BATCH)
            per_stack = _median_ms(ink_marks_many, [grays[b * BATCH : (b + 1) * BATCH]
                                                    for b in range(len(batches))],
                                   max(5, args.repeat // BATCH))
            times[INK_BATCH_ROW].append(per_stack / BATCH)
            for taking_turns, (wall_row, cpu_row) in THREADED_ROWS.items():
                with _turns(taking_turns):
                    wall, cpu = _two_threads_ms(predictor, uploads, args.repeat)
                times[wall_row].append(wall)
                times[cpu_row].append(cpu)
    print(
        f"Model `{predictor.artifact.name}` ({predictor.artifact.kind}), 28x28 PNG uploads, "
        f"median of {args.repeat} (2 threads: mean), 1 BLAS thread, {args.rounds} rounds; "
        f"load average {os.getloadavg()[0]:.2f}\n"
    )
    print("| Step | Median (range over rounds) |")
    print("|---|---:|")
    for name, ms in times.items():
        print(f"| {name} | {min(ms):.3f}-{max(ms):.3f} ms |")


if __name__ == "__main__":
    main()
