"""``ocr-feedback``: retrain from a corrections folder behind the accuracy gate; forget."""

import json

import numpy as np
import pytest

from ocr_service import feedback as fb
from ocr_service.model_store import load_model
from ocr_service.retrain import REFUSED, main
from ocr_testing.writing import bars_folder


@pytest.fixture
def served(model_copy):
    return model_copy


@pytest.fixture
def corrections(tmp_path):
    return bars_folder(tmp_path / "feedback")


def _retrain(served, corrections, *extra):
    return main(["retrain", "--feedback", str(corrections), "--model", str(served),
                 "--general", "digits", "--epochs", "2", "--json", *extra])  # fmt: skip


def test_retrain_writes_the_fine_tuned_model_over_the_served_one(served, corrections, capsys):
    old = load_model(served)
    assert _retrain(served, corrections) == 0
    report = json.loads(capsys.readouterr().out)
    new = load_model(served)
    assert new.version == report["written"]["version"] != old.version
    assert new.metadata["training"]["init"]["version"] == old.version
    assert set(report["held_out"]) == {"digits", "folder:feedback"}
    digits = report["held_out"]["digits"]
    assert digits["size"] == 359 and digits["before"] == pytest.approx(
        old.metadata["metrics"]["test_accuracy"], abs=1e-6)
    assert digits["before"] - digits["after"] <= report["max_drop"] == 0.01
    assert report["held_out"]["folder:feedback"]["size"] == 4


def test_a_model_that_loses_general_accuracy_is_not_written(served, corrections, capsys):
    before = served.with_suffix(".npz").read_bytes(), served.with_suffix(".json").read_bytes()
    assert _retrain(served, corrections, "--max-drop", "-1") == REFUSED
    captured = capsys.readouterr()
    assert "not written: digits held-out accuracy would fall by" in captured.err
    assert json.loads(captured.out)["written"] is None
    assert (served.with_suffix(".npz").read_bytes(),
            served.with_suffix(".json").read_bytes()) == before  # fmt: skip


def test_retrain_without_corrections_or_with_another_scheme_exits_2(served, corrections,
                                                                  tmp_path, capsys):
    assert _retrain(served, tmp_path / "none") == 2
    assert "no corrections folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # `make retrain` without FEEDBACK
        _retrain(served, "")
    assert exit_info.value.code == 2 and "empty" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _retrain(served, tmp_path / "empty") == 2
    assert "needs a class sub-folder" in capsys.readouterr().err
    assert main(["retrain", "--feedback", str(corrections), "--model", str(served)]) == 2
    assert "scheme" in capsys.readouterr().err  # mnist5k against an 8x8 digits model


def test_forget_deletes_one_users_corrections(tmp_path, capsys):
    store = fb.FeedbackStore(tmp_path / "f", 10**8)
    ink = np.zeros((28, 28), np.float32)
    ink[4:24, 12:16] = 1.0

    one = fb.Correction("1", "7", 0.5, (0, 0, 4, 20), ink, ink)
    store.add([one, one], model={"name": "m", "version": "v"}, user="ann",
              scheme="mnist")  # fmt: skip
    kept = store.add([one], model={"name": "m", "version": "v"}, user="bob",
                     scheme="mnist")  # fmt: skip
    assert main(["forget", "--feedback", str(store.root), "--user", "ann"]) == 0
    assert "deleted 2 correction(s)" in capsys.readouterr().out
    assert [r["id"] for r in store.records()] == [kept[0]["id"]]
    assert main(["forget", "--feedback", str(store.root)]) == 2
    assert main(["forget", "--feedback", str(store.root), "--id", "x/../y"]) == 2
    assert "not a correction id" in capsys.readouterr().err
