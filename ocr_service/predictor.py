"""Model + preprocessing + segmentation -> recognised characters (no Flask here).

A ``Predictor`` holds only read-only state (the artifact), so one instance serves many
threads: every request works on its own arrays.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from .features import model_inputs
from .image_errors import ImageError, NoInkError
from .ink import InkMarks, ink_marks_many
from .negatives import among_classes
from .options import DEFAULT_SEGMENT, DEFAULT_TOP_K
from .preprocess import ANALYSIS_PIXELS, DEFAULT_MAX_PIXELS, decode_scaled, normalize_character
from .segment import Segment, segment_ink

__all__ = ["REJECT", "CharacterResult", "PredictionResult", "Predictor"]

REJECT = "?"
# A split's prior: _SPLIT_SLOPE * (width / reference height - aspect), added to the pieces'
# confidence gain; the aspect is larger for a character alone in its line (most such uploads
# are one character, and there are no neighbours to measure it against). Chosen on strings
# and single digits rendered from mnist5k's validation split, not its test split; "multi"
# expects several characters, so it splits more readily.
_SPLIT_ASPECT = {"auto": 1.2, "multi": 1.0, "single": np.inf}
_LONE_SPLIT_ASPECT = {"auto": 1.6, "multi": 1.4, "single": np.inf}
_SPLIT_SLOPE = 2.0

#: Readings of character-sized images (up to this many analysed pixels) take turns in a
#: process (all ``Predictor`` objects: an old and a new model during a swap too). Such a
#: reading is some hundreds of numpy calls of a few microseconds, and numpy releases the GIL
#: around each one on arrays over a few hundred elements: two threads reading 28x28 uploads
#: at once hand the GIL to each other on nearly every call, and spend more CPU and wall time
#: than taking turns (``scripts/bench_predict.py``, "2 threads" rows). Larger images read in
#: parallel: their Pillow and numpy calls are long enough for two threads to use two cores.
#: The crossover, measured, lies between 96x96 and 160x160 (docs/benchmarks.md).
TURN_PIXELS = 128 * 128
_TURNS = threading.Lock()


def _turn(pixels: int) -> AbstractContextManager[Any]:
    """What a reading of images of at most ``pixels`` analysed pixels holds while it runs."""
    return _TURNS if pixels <= TURN_PIXELS else contextlib.nullcontext()


@dataclass(frozen=True)
class CharacterResult:
    """One recognised character; ``box`` is ``(x, y, w, h)`` in the uploaded image's pixels."""

    char: str
    confidence: float
    box: tuple[int, int, int, int]
    top: list[tuple[str, float]]
    #: (H, W) float32: the normalised character image (the network reads its
    #: ``features.model_inputs``, which may be gradient planes rather than these pixels)
    model_input: np.ndarray = field(repr=False)
    line: int = 0

    def to_dict(self, include_input: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "char": self.char,
            "confidence": round(self.confidence, 6),
            "box": list(self.box),
            "top": [{"char": c, "p": round(p, 6)} for c, p in self.top],
        }
        if include_input:
            out["input"] = np.round(self.model_input.astype(np.float64), 3).tolist()
        return out


@dataclass(frozen=True)
class PredictionResult:
    """All characters of one image in reading order, plus model statistics."""

    characters: list[CharacterResult]
    stats: dict[str, float]

    @property
    def text(self) -> str:
        """Characters joined; lines separated by ``\\n``."""
        lines: dict[int, list[str]] = {}
        for c in self.characters:
            lines.setdefault(c.line, []).append(c.char)
        return "\n".join("".join(chars) for _, chars in sorted(lines.items()))

    def to_dict(self, include_inputs: bool = False) -> dict[str, Any]:
        return {
            "text": self.text,
            "characters": [c.to_dict(include_inputs) for c in self.characters],
        }


def _upload_box(box: tuple[int, int, int, int], scale: tuple[float, float]):
    """A box of the (possibly reduced) analysed image in the upload's pixel coordinates."""
    x, y, w, h = box
    sy, sx = scale
    x0, y0 = round(x * sx), round(y * sy)
    return (x0, y0, round((x + w) * sx) - x0, round((y + h) * sy) - y0)


def _split_bias(segments: list[Segment], segment: str) -> list[float]:
    """How readily each segment is split: the wider against its line's character height,
    the more (a lone character on its line less readily)."""
    return [
        _SPLIT_SLOPE
        * (
            seg.box[2] / seg.ref_height
            - (_SPLIT_ASPECT if seg.line_size > 1 else _LONE_SPLIT_ASPECT)[segment]
        )
        for seg in segments
    ]


def _splits_worth_trying(
    segments: list[Segment], best: np.ndarray, bias: list[float], candidates: list[Segment],
    page_of: list[int], failed: dict[int, ImageError],
) -> tuple[list[list[list[int]]], list[Segment]]:
    """Each segment's readings (lists of indices into ``candidates``: the whole first, then
    its splits), and the pieces still to classify; ``candidates`` grows by those pieces.

    A wide segment is several characters when its pieces read more confidently (geometric
    mean) than the whole. A split's score, mean log p(pieces) - log p(whole) + bias, is at
    most -log p(whole) + bias: where that is not positive no split can win, and none is
    built or classified. A segment whose splits fail records the error for its page in
    ``failed``: the other pages are still read.
    """
    options: list[list[list[int]]] = [[[i]] for i in range(len(segments))]
    pending: list[Segment] = []
    for i, seg in enumerate(segments):
        if seg.wide and bias[i] - np.log(max(best[i], 1e-12)) > 0:
            try:
                splits = seg.splits
            except ImageError as exc:
                failed.setdefault(page_of[i], exc)
                continue
            for split in splits:
                options[i].append(list(range(len(candidates), len(candidates) + len(split))))
                candidates.extend(split)
                pending.extend(split)
    return options, pending


def _choose(
    options: list[list[list[int]]], best: np.ndarray, bias: list[float], page_of: list[int],
    n_pages: int,
) -> list[list[int]]:
    """Per page, the candidates of each segment's best-scoring reading, in order."""
    log_best = np.log(np.maximum(best, 1e-12))
    chosen: list[list[int]] = [[] for _ in range(n_pages)]
    for i, readings in enumerate(options):
        scores = [0.0] + [
            log_best[r].mean() - log_best[readings[0][0]] + bias[i] for r in readings[1:]
        ]
        chosen[page_of[i]].extend(readings[int(np.argmax(scores))])
    return chosen


#: Analysed pixels of the uploads ``predict_many`` decodes before it reads them: at most
#: ~3 MP (one more upload of up to ``ANALYSIS_PIXELS`` may cross the limit), 12 MB of
#: float32 images, then 24 MB of ink maps and marks. A batch of large photos is read in
#: several network calls and never holds much more memory than a few uploads, while a batch
#: of small ones still shares one call.
_POOL_PIXELS = 2 * ANALYSIS_PIXELS

#: one image's segments and its scale (the upload's pixels per analysed pixel, ``(sy, sx)``)
_Page = tuple[list[Segment], tuple[float, float]]


def _character_segments(marks: InkMarks, segment: str) -> list[Segment]:
    segments = segment_ink(marks, segment)
    if not segments:
        raise NoInkError("no ink found")
    return segments


_T = TypeVar("_T")

#: one decoded upload: its index in the batch, grayscale image (or a later step's result of
#: it) and scale
_Decoded = tuple[int, Any, tuple[float, float]]


def _each(
    step: Callable[[Any], Any],
    items: list[_Decoded],
    outcomes: list[PredictionResult | ImageError | None],
) -> list[_Decoded]:
    """``step`` applied to every item's image; an upload whose step raises ``ImageError``
    gets that error as its outcome and is left out. Empties ``items`` as it goes, so each
    image can be freed once its result exists."""
    done = []
    items.reverse()
    while items:
        index, image, scale = items.pop()
        try:
            done.append((index, step(image), scale))
        except ImageError as exc:
            outcomes[index] = exc
    return done


def _marks(
    decoded: list[_Decoded], outcomes: list[PredictionResult | ImageError | None]
) -> list[_Decoded]:
    """``_each(ink_marks, decoded, outcomes)``, with the images of one size analysed
    together (``ink_marks_many``)."""
    found = iter(ink_marks_many([gray for _, gray, _ in decoded]))
    return _each(lambda _: _raise_error(next(found)), decoded, outcomes)


def _raise_error(result: _T | ImageError) -> _T:
    if isinstance(result, ImageError):
        raise result
    return result


class Predictor:
    """Reads characters from image bytes with a loaded ``ModelArtifact``."""

    def __init__(self, artifact: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.artifact = artifact
        self.max_pixels = max_pixels
        self._classes = list(artifact.classes)
        self._non_character = bool(getattr(artifact, "non_character", False))
        self._scheme = artifact.scheme
        self._features = getattr(artifact, "features", "pixels")
        self._threshold = artifact.reject_threshold or 0.0

    @classmethod
    def from_path(
        cls, path: str | os.PathLike[str] | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> Predictor:
        """Load the artifact at ``path`` (None: ``$OCR_MODEL_PATH`` or the shipped model)."""
        from .model_store import default_model_path, load_model

        return cls(
            load_model(default_model_path() if path is None else path), max_pixels=max_pixels
        )

    def predict_bytes(
        self, data: bytes, *, top_k: int = DEFAULT_TOP_K, segment: str = DEFAULT_SEGMENT
    ) -> PredictionResult:
        """Decode, segment and classify one upload (``predict_many`` of it alone). Raises
        ``ImageError`` subclasses."""
        return _raise_error(self.predict_many([data], top_k=top_k, segment=segment)[0])

    def predict_many(
        self, uploads: Sequence[bytes], *, top_k: int = DEFAULT_TOP_K,
        segment: str = DEFAULT_SEGMENT
    ) -> list[PredictionResult | ImageError]:
        """A result for every upload, or in its place the ``ImageError`` its reading raised.

        The results are those of one ``predict_bytes`` call per upload, up to float rounding
        of the batched matmuls (a near-tie may rarely go the other way). An MLP classifies the
        characters of many uploads in one network call (of all of them, unless together they
        exceed ``_POOL_PIXELS``); a recurrent network relaxes a batch until its slowest sample
        converges, so its answers depend on the batch: it reads each upload on its own, as
        ``predict_bytes`` does.
        """
        outcomes: list[PredictionResult | ImageError | None] = [None] * len(uploads)
        decoded: list[_Decoded] = []
        held = 0
        for index, data in enumerate(uploads):
            try:
                decoded.append((index, *self._decode(data)))
            except ImageError as exc:
                outcomes[index] = exc
                continue
            held += decoded[-1][1].size
            if held >= _POOL_PIXELS or not self.artifact.network.BATCH_INDEPENDENT:
                self._read_decoded(decoded, outcomes, top_k, segment)
                held = 0
        self._read_decoded(decoded, outcomes, top_k, segment)
        return outcomes  # type: ignore[return-value]  # every entry is filled by now

    def _decode(self, data: bytes) -> tuple[np.ndarray, tuple[float, float]]:
        return decode_scaled(data, max_pixels=self.max_pixels, work_pixels=ANALYSIS_PIXELS)

    def _read_decoded(
        self,
        decoded: list[_Decoded],
        outcomes: list[PredictionResult | ImageError | None],
        top_k: int,
        segment: str,
    ) -> None:
        """Read the decoded uploads together into ``outcomes``, and empty ``decoded``.

        One step at a time over all of them (every ink map, then every segmentation, then
        one network call), so each step's code stays in the CPU caches: less time per upload
        than taking every step of one upload in turn (docs/benchmarks.md). The uploads are
        decoded before, outside the turn (see ``_turn``), so that a thread waiting for its
        turn gets it between two pools of a large batch.
        """
        if not decoded:
            return
        with _turn(max(gray.size for _, gray, _ in decoded)):
            marks = _marks(decoded, outcomes)
            pages = _each(lambda found: _character_segments(found, segment), marks, outcomes)
            pooled = [(segments, scale) for _, segments, scale in pages]
            results = self._read(pooled, top_k, segment)
        for (index, _, _), result in zip(pages, results, strict=True):
            outcomes[index] = result

    def _answer_probs(self, probs: np.ndarray) -> np.ndarray:
        """Probabilities (n, C) of the classes given that each segment is a character: what a
        non-character output took is shared out again. It steers the cuts; a character it
        doubts is still read, and the calibrated threshold decides on "?" as for any model.
        """
        return among_classes(probs, len(self._classes)) if self._non_character else probs

    def _classify(
        self, segments: list[Segment]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """Model inputs (n, H, W), probabilities of the C classes (n, C) and network
        statistics. A non-character output is dropped: what it takes from the classes makes
        a wrong cut (or a missed one) read unconfidently, and no answer is "non-character"."""
        inputs = np.stack([normalize_character(s.ink, self._scheme) for s in segments])
        probs, stats = self.artifact.network.predict_proba_with_stats(
            model_inputs(inputs, self._features)
        )
        return inputs, probs[:, : len(self._classes)], stats

    def _read(
        self, pages: list[_Page], top_k: int, segment: str
    ) -> list[PredictionResult | ImageError]:
        """Classify the segments of several pages together; one result (or error) per page.

        Network statistics are those of the whole call.
        """
        if not pages:
            return []
        segments = [seg for page_segments, _ in pages for seg in page_segments]
        page_of = [p for p, (page_segments, _) in enumerate(pages) for _ in page_segments]
        failed: dict[int, ImageError] = {}
        # First every whole segment, in one network call.
        candidates = list(segments)
        inputs, probs, stats = self._classify(candidates)
        bias = _split_bias(segments, segment)
        options, pending = _splits_worth_trying(segments, probs.max(axis=1), bias, candidates,
                                                page_of, failed)
        if pending:  # every piece of every split that could win: a second network call
            more_inputs, more, more_stats = self._classify(pending)
            inputs = np.concatenate([inputs, more_inputs])
            probs = np.concatenate([probs, more])
            stats = {k: v + more_stats.get(k, 0.0) for k, v in stats.items()}  # total cost
        chosen = _choose(options, probs.max(axis=1), bias, page_of, len(pages))
        stats = {name: float(v) for name, v in stats.items()}
        characters = self._characters(chosen, probs, inputs, candidates, pages, top_k)
        return [failed.get(p) or PredictionResult(chars, stats)
                for p, chars in enumerate(characters)]

    def _characters(
        self, chosen: list[list[int]], probs: np.ndarray, inputs: np.ndarray,
        candidates: list[Segment], pages: list[_Page], top_k: int,
    ) -> list[list[CharacterResult]]:
        """The characters of each page: its ``chosen`` candidates, answered."""
        k = max(1, min(int(top_k), len(self._classes)))
        # every answer's top k in one argsort; Python floats and ints for the loop below
        answered = [i for page_chosen in chosen for i in page_chosen]
        answer = self._answer_probs(probs[answered])
        orders = np.argsort(-answer, axis=1, kind="stable")[:, :k].tolist()
        answer_rows = iter(zip(answer.tolist(), orders, strict=True))
        pages_characters = []
        for p, (_, scale) in enumerate(pages):
            characters = []
            for i in chosen[p]:
                prob, order = next(answer_rows)
                confidence = prob[order[0]]
                characters.append(
                    CharacterResult(
                        char=self._classes[order[0]] if confidence >= self._threshold else REJECT,
                        confidence=confidence,
                        box=_upload_box(candidates[i].box, scale),
                        top=[(self._classes[j], prob[j]) for j in order],
                        model_input=inputs[i],
                        line=candidates[i].line,
                    )
                )
            pages_characters.append(characters)
        return pages_characters
