"""The corrections store: its folder layout, all-or-nothing writes, the size cap under
concurrent processes, deletion, and the request fields it validates."""

import io
import json
import multiprocessing
import os

import numpy as np
import pytest
from PIL import Image

from ocr_service import feedback as fb
from ocr_service.datasets import load_dataset
from ocr_service.predictor import Predictor

DIGITS = [str(d) for d in range(10)]
MODEL = {"name": "m", "version": "v1"}


def _correction(label: str, seed: int = 0, read: str = "1") -> fb.Correction:
    """A character whose model input is MNIST image ``seed`` (normalised as inputs are)."""
    model_input = load_dataset("mnist5k").images[seed]
    crop = np.random.default_rng(seed).uniform(0, 1, (40, 30)).astype(np.float32)
    return fb.Correction(label, read, 0.9, (1, 2, 30, 40), model_input, crop)


def _files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                  and p.name not in (".lock", ".usage"))  # fmt: skip


@pytest.fixture
def store(tmp_path):
    return fb.FeedbackStore(tmp_path / "feedback", max_bytes=10_000_000)


def test_a_correction_is_three_files_in_the_folder_of_its_true_label(store):
    records = store.add([_correction("7"), _correction("3", 1)], model=MODEL, user="ann",
                        scheme="mnist")  # fmt: skip
    assert [r["label"] for r in records] == ["7", "3"] and records[0]["read"] == "1"
    name = records[0]["id"]
    assert {"7/" + name + ".png", "7/.crops/" + name + ".png",
            "7/.records/" + name + ".json"} <= set(_files(store.root))  # fmt: skip
    assert len(_files(store.root)) == 6
    record = json.loads((store.root / "7" / ".records" / f"{name}.json").read_text())
    assert record["model"] == MODEL and record["user"] == "ann" and record["box"] == [1, 2, 30, 40]
    with Image.open(store.root / "7" / ".crops" / f"{name}.png") as crop:
        assert crop.size == (30, 40) and crop.mode == "L"


def test_the_folder_dataset_reads_back_the_model_inputs_and_skips_the_rest(store):
    corrections = [_correction(label, seed) for seed, label in enumerate("7733")]
    store.add(corrections, model=MODEL, scheme="mnist")
    ds = load_dataset("folder", store.root)
    assert ds.classes == ["3", "7"] and len(ds) == 4  # no crop or record read as an image
    for correction in corrections:
        same = [i for i in range(4) if ds.classes[ds.labels[i]] == correction.label]
        error = min(np.abs(ds.images[i] - correction.model_input).mean() for i in same)
        assert error < 0.02


def test_server_chosen_names_never_repeat(store):
    records = store.add([_correction("1", s) for s in range(20)], model=MODEL, scheme="mnist")
    assert len({r["id"] for r in records}) == 20
    assert all(fb._ID.match(r["id"]) for r in records)


def test_a_full_store_refuses_and_writes_nothing(tmp_path):
    small = fb.FeedbackStore(tmp_path / "f", max_bytes=3000)
    small.add([_correction("1")], model=MODEL, scheme="mnist")
    before = _files(small.root)
    with pytest.raises(fb.StoreFullError, match="full"):
        small.add([_correction("2", s) for s in range(5)], model=MODEL, scheme="mnist")
    assert _files(small.root) == before
    assert small.used_bytes() <= 3000


def test_room_made_by_hand_is_found_before_a_correction_is_refused(tmp_path):
    small = fb.FeedbackStore(tmp_path / "f", max_bytes=3000)
    small.add([_correction("1")], model=MODEL, scheme="mnist")
    with pytest.raises(fb.StoreFullError):
        small.add([_correction("2", 1)], model=MODEL, scheme="mnist")
    for path in [p for p in (tmp_path / "f" / "1").rglob("*") if p.is_file()]:
        path.unlink()  # an operator deletes by hand; the tally still counts those files
    small.add([_correction("2", 1)], model=MODEL, scheme="mnist")
    assert small.used_bytes() <= 3000


def test_files_added_by_hand_count_once_the_tally_is_old(tmp_path):
    store = fb.FeedbackStore(tmp_path / "f", max_bytes=20_000)
    store.add([_correction("1")], model=MODEL, scheme="mnist")
    (tmp_path / "f" / "notes.bin").write_bytes(b"\0" * 15_000)
    store.add([_correction("2", 1)], model=MODEL, scheme="mnist")  # the fresh tally misses it
    tally = tmp_path / "f" / ".usage"
    old = tally.stat().st_mtime - fb.TALLY_SECONDS - 1
    os.utime(tally, (old, old))
    with pytest.raises(fb.StoreFullError):
        store.add([_correction("3", 2)], model=MODEL, scheme="mnist")


def test_a_failed_write_removes_the_whole_request(store, monkeypatch):
    real = fb.atomic_write
    calls = []

    def fail_on_the_fifth(target, data):
        calls.append(target)
        if len(calls) == 5:
            raise OSError(13, "Permission denied")
        real(target, data)

    monkeypatch.setattr(fb, "atomic_write", fail_on_the_fifth)
    with pytest.raises(fb.StoreUnavailableError):
        store.add([_correction("1"), _correction("2")], model=MODEL, scheme="mnist")
    assert _files(store.root) == []


def test_a_full_disk_is_a_full_store(store, monkeypatch):
    def no_space(target, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fb, "atomic_write", no_space)
    with pytest.raises(fb.StoreFullError, match="no space"):
        store.add([_correction("1")], model=MODEL, scheme="mnist")


def _add_many(root: str, cap: int, n: int, queue) -> None:
    store = fb.FeedbackStore(root, cap)
    stored = 0
    for i in range(n):
        try:
            store.add([_correction("5", i)], model=MODEL, scheme="mnist")
            stored += 1
        except fb.StoreFullError:
            pass
    queue.put(stored)


def test_concurrent_writers_keep_the_cap_and_lose_nothing(tmp_path):
    one = fb.FeedbackStore(tmp_path / "probe", 10**9)
    one.add([_correction("5")], model=MODEL, scheme="mnist")
    size = one.used_bytes()
    cap = int(size * 12.5)  # room for 12 of the 4 x 10 corrections the writers attempt
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    writers = [ctx.Process(target=_add_many, args=(str(tmp_path / "f"), cap, 10, queue))
               for _ in range(4)]  # fmt: skip
    for w in writers:
        w.start()
    stored = sum(queue.get(timeout=60) for _ in writers)
    for w in writers:
        w.join(timeout=60)
    store = fb.FeedbackStore(tmp_path / "f", cap)
    assert store.used_bytes() <= cap
    assert stored == len(list(store.records())) == len(os.listdir(tmp_path / "f" / "5")) - 2
    assert 10 <= stored <= 12  # sizes differ by a few bytes per random picture


def test_forget_deletes_one_users_corrections_or_given_ids(store):
    ann = store.add([_correction("1"), _correction("2")], model=MODEL, user="ann",
                    scheme="mnist")  # fmt: skip
    bob = store.add([_correction("1", 5), _correction("4", 6)], model=MODEL, user="bob",
                    scheme="mnist")  # fmt: skip
    assert store.forget(user="ann") == 2
    assert sorted(r["user"] for r in store.records()) == ["bob", "bob"]
    assert store.forget(ids=[bob[1]["id"]]) == 1
    assert [r["id"] for r in store.records()] == [bob[0]["id"]]
    assert len(_files(store.root)) == 3
    assert store.forget(ids=[ann[0]["id"]]) == 0
    with pytest.raises(ValueError, match="not a correction id"):
        store.forget(ids=["../../etc/passwd"])


@pytest.mark.parametrize(("text", "labels"), [("42", ["4", "2"]), (" 4 2\n7", ["4", "2", "7"])])
def test_labels_are_the_texts_characters_without_white_space(text, labels):
    assert fb.parse_labels(text, DIGITS) == labels


@pytest.mark.parametrize(("text", "error", "match"), [
    (None, fb.FeedbackError, "non-empty string"),
    (42, fb.FeedbackError, "non-empty string"),
    ("  ", fb.FeedbackError, "non-empty string"),
    ("4a", fb.UnknownLabelError, "'a' not among the model's classes"),
    ("1" * 129, fb.FeedbackError, "at most 128"),
])  # fmt: skip
def test_bad_texts_are_refused(text, error, match):
    with pytest.raises(error, match=match):
        fb.parse_labels(text, DIGITS)


def test_classes_that_cannot_name_a_folder_are_refused():
    with pytest.raises(fb.UnknownLabelError):
        fb.parse_labels(".", [".", "1"])


@pytest.mark.parametrize("user", ["ann", "u-17@example.org", None, ""])
def test_user_tags(user):
    assert fb.parse_user(user) == (user or None)


@pytest.mark.parametrize("user", ["../x", "a b", "x" * 65, 7])
def test_bad_user_tags(user):
    with pytest.raises(fb.FeedbackError, match="user"):
        fb.parse_user(user)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_crops_are_the_boxes_of_the_upload_and_stay_small():
    pixels = np.full((1200, 2400), 255, np.uint8)
    pixels[100:900, 300:500] = 0
    data = _png(Image.fromarray(pixels))
    crop, = fb.character_crops(data, [(300, 100, 200, 800)], max_pixels=10**7)
    assert max(crop.shape) <= fb.CROP_MAX_SIDE
    assert abs(crop.shape[0] / crop.shape[1] - 4) < 0.2 and crop.mean() < 0.1  # all ink


def test_corrections_pair_every_character_read_or_none(small_model_path):
    predictor = Predictor.from_path(small_model_path)
    image = Image.new("L", (160, 80), 255)
    from PIL import ImageDraw

    pen = ImageDraw.Draw(image)
    pen.ellipse([10, 10, 60, 70], outline=0, width=6)
    pen.line([(120, 10), (120, 70)], fill=0, width=6)
    data = _png(image)
    result = predictor.predict_bytes(data)
    assert len(result.characters) == 2
    pairs = fb.corrections_for(result, ["6", "7"], data, max_pixels=10**7)
    assert [(p.label, p.read) for p in pairs] == [("6", result.characters[0].char),
                                                  ("7", result.characters[1].char)]
    with pytest.raises(fb.CountMismatchError, match="reads as 2 character"):
        fb.corrections_for(result, ["6"], data, max_pixels=10**7)
