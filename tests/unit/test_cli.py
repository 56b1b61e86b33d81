"""The console scripts end to end, in process (``*_main(argv)``) and as real commands."""

import ast
import json
import subprocess
import sys

import pytest
from PIL import Image

from ocr_service.cli import eval_main, predict_main, train_main
from ocr_service.model_store import load_model
from ocr_testing.writing import bars_folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "digits"
    assert train_main(["--dataset", "digits", "--epochs", "20", "--hidden", "64",
                       "--quiet", "--out", str(out)]) == 0
    return out


def test_train_writes_a_loadable_artifact_with_history_and_metrics(trained):
    artifact = load_model(trained)
    meta = artifact.metadata
    assert meta["training"]["dataset"] == "digits"
    assert len(meta["training"]["history"]) == meta["training"]["epochs"] == 20
    assert meta["metrics"]["test_size"] == 359
    assert meta["metrics"]["test_accuracy"] > 0.9
    assert meta["training"]["config"]["hidden"] == [64]
    assert artifact.features == "gradients"  # the command's default: the better input
    assert 0 < artifact.reject_threshold < 1


def test_a_model_trained_on_concavity_features_reads_them_when_predicting(tmp_path, capsys):
    out = tmp_path / "concavity"
    assert train_main(["--dataset", "digits", "--epochs", "15", "--hidden", "64", "--features",
                       "gradients+concavity", "--keep", "last", "--quiet", "--out", str(out)]) == 0
    artifact = load_model(out)
    assert artifact.features == "gradients+concavity"
    assert artifact.metadata["training"]["best_epoch"] == 15  # --keep last
    config = artifact.metadata["training"]["config"]
    assert config["keep"] == "last" and config["patience"] == 0  # what the run did
    assert artifact.metadata["metrics"]["test_accuracy"] > 0.9
    capsys.readouterr()
    assert eval_main(["--model", str(out), "--dataset", "digits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.9  # the same inputs as trained
    image = _digit_png(tmp_path)
    assert predict_main(["--model", str(out), "--json", str(image)]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == "7"


def test_train_prints_per_epoch_progress_and_the_test_accuracy(tmp_path, capsys):
    assert train_main(["--dataset", "digits", "--epochs", "2", "--out",
                       str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "epoch   1" in out and "val_acc" in out
    assert "test accuracy" in out and "held-out" in out


@pytest.mark.parametrize("args, message", [
    (["--dataset", "digits", "--epochs", "0"], "positive"),
    (["--dataset", "digits", "--hidden", "12,x"], "sizes"),
    (["--dataset", "digits", "--lr", "-1"], "positive"),
    (["--dataset", "mnist"], "invalid choice"),
    (["--dataset", "idx"], "needs --data-dir"),
    (["--dataset", "folder", "--data-dir", "/nonexistent/x"], "nonexistent"),
    (["--dataset", "digits", "--val-split", "0.7"], "[0.0, 0.5)"),
    (["--dataset", "digits", "--styles", "-5"], ">= 0"),
    (["--dataset", "digits", "--keep", "first"], "invalid choice"),
    (["--dataset", "digits", "--keep", "last", "--patience", "3"], "no --patience"),
])
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, args,
                                                             message):
    with pytest.raises(SystemExit) as exc_info:
        code = train_main([*args, "--out", str(tmp_path / "m")])
        raise SystemExit(code)
    assert exc_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert list(tmp_path.iterdir()) == []


def test_corrupt_idx_data_exits_2(tmp_path, capsys):
    data = tmp_path / "idx"
    data.mkdir()
    (data / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    (data / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00")
    assert train_main(["--dataset", "idx", "--data-dir", str(data),
                       "--out", str(tmp_path / "m")]) == 2
    assert "train-" in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()


def test_eval_prints_metrics_and_writes_report_plots(trained, tmp_path, capsys):
    assert eval_main(["--model", str(trained), "--dataset", "digits",
                      "--report", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "confusion matrix" in out and "precision" in out
    for name in ("confusion.png", "learning_curve.png", "mistakes.png"):
        with Image.open(tmp_path / "r" / name) as img:
            assert img.size[0] > 100


def test_eval_json_matches_the_stored_test_accuracy(trained, capsys):
    assert eval_main(["--model", str(trained), "--dataset", "digits", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    stored = load_model(trained).metadata["metrics"]["test_accuracy"]
    assert metrics["accuracy"] == pytest.approx(stored, abs=1e-6)
    assert sum(map(sum, metrics["confusion"])) == 359


def test_eval_refuses_a_dataset_of_another_input_scheme(trained, capsys):
    assert eval_main(["--model", str(trained), "--dataset", "mnist5k"]) == 2
    assert "scheme" in capsys.readouterr().err


def test_eval_unwritable_report_folder_exits_2_with_one_line(trained, capsys):
    assert eval_main(["--model", str(trained), "--dataset", "digits",
                      "--report", "/proc/no-such-dir"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "/proc/no-such-dir" in err


def test_eval_missing_model_exits_2(tmp_path, capsys):
    assert eval_main(["--model", str(tmp_path / "none"), "--dataset", "digits"]) == 2
    assert "not found" in capsys.readouterr().err


def _digit_png(tmp_path, label: int = 7):
    from ocr_service.datasets import load_dataset

    ds = load_dataset("mnist5k")
    index = int((ds.labels == label).nonzero()[0][-1])
    path = tmp_path / f"digit{label}.png"
    Image.fromarray((255 - ds.images[index] * 255).astype("uint8")).resize((112, 112)).save(
        path)
    return path


def test_predict_reads_an_image_file_with_the_shipped_model(tmp_path, capsys):
    image = _digit_png(tmp_path, label=7)
    assert predict_main(["--json", str(image)]) == 0  # no --model: the shipped one
    line = json.loads(capsys.readouterr().out)
    assert line["file"] == str(image)
    assert line["text"] == "7" and line["characters"][0]["char"] == "7"
    assert predict_main([str(image)]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: 7")


def test_predict_reports_unreadable_files_and_exits_2(trained, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert predict_main(["--model", str(trained), str(bad), str(tmp_path / "gone.png")]) == 2
    err = capsys.readouterr().err
    assert "bad.png: error" in err and "gone.png: error" in err


def test_console_script_runs_as_a_real_command(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ocr_service.cli", "train", "--dataset", "digits",
         "--epochs", "1", "--quiet", "--out", str(tmp_path / "m")],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m.npz").exists() and (tmp_path / "m.json").exists()


def _loaded(call: str, names: set[str]) -> list[str]:
    """Which of the modules ``names`` (dotted, or top-level packages) a fresh interpreter
    holds after running the CLI ``call`` (which must return 0)."""
    script = (
        "import sys\n"
        "from ocr_service.cli import predict_main, train_main\n"
        f"assert {call} == 0\n"
        "loaded = set(sys.modules) | {m.split('.')[0] for m in sys.modules}\n"
        f"print(sorted(set({sorted(names)!r}) & loaded))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return ast.literal_eval(done.stdout.splitlines()[-1])


def test_predict_loads_neither_the_datasets_nor_the_training_code_nor_scipy(tmp_path):
    """``ocr-predict`` starts without the modules only training and evaluation use."""
    call = f"predict_main([{str(_digit_png(tmp_path))!r}])"
    assert _loaded(call, {"ocr_service.datasets", "ocr_service.mixing",
                          "ocr_service.training", "scipy"}) == []


def test_training_on_digits_loads_neither_scikit_learn_scipy_nor_numba(tmp_path):
    """Users wait for the whole process: a command imports only what it uses."""
    call = (f"train_main(['--dataset', 'digits', '--epochs', '1', '--quiet', '--out', "
            f"{str(tmp_path / 'm')!r}])")
    assert _loaded(call, {"sklearn", "scipy", "numba", "PIL", "matplotlib"}) == []


@pytest.mark.slow
@pytest.mark.parametrize("dataset, floor", [("digits", 0.975), ("mnist5k", 0.95)])
def test_recurrent_backprop_model_trains_with_its_defaults(tmp_path, dataset, floor):
    out = tmp_path / f"rbp-{dataset}"
    assert train_main(["--model", "rbp", "--dataset", dataset, "--seed", "0", "--quiet",
                       "--out", str(out)]) == 0
    artifact = load_model(out)
    assert artifact.kind == "rbp"
    assert artifact.metadata["metrics"]["test_accuracy"] >= floor
    history = artifact.metadata["training"]["history"]
    assert all(h["forward_iterations"] > 1 and h["backward_iterations"] > 1 for h in history)


def test_train_with_negatives_saves_a_non_character_model_that_evaluates(tmp_path, capsys):
    out = tmp_path / "neg"
    assert train_main(["--dataset", "digits", "--epochs", "3", "--hidden", "32",
                       "--negatives", "100", "--quiet", "--out", str(out)]) == 0
    artifact = load_model(out)
    assert artifact.non_character and artifact.network.n_classes == 11
    assert artifact.metadata["training"]["config"]["negatives"] == 100
    capsys.readouterr()
    assert eval_main(["--model", str(out), "--dataset", "digits", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert len(metrics["confusion"]) == 10
    assert metrics["accuracy"] == pytest.approx(artifact.metadata["metrics"]["test_accuracy"],
                                                abs=1e-6)


def test_train_on_pixels_records_them_and_every_reader_uses_them(tmp_path, capsys):
    out = tmp_path / "pixels"
    assert train_main(["--dataset", "digits", "--epochs", "15", "--hidden", "32",
                       "--features", "pixels", "--quiet", "--out", str(out)]) == 0
    artifact = load_model(out)
    assert artifact.features == "pixels"
    assert artifact.metadata["training"]["config"]["features"] == "pixels"
    stored = artifact.metadata["metrics"]["test_accuracy"]
    assert stored > 0.8
    capsys.readouterr()
    assert eval_main(["--model", str(out), "--dataset", "digits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(stored, abs=1e-6)


def test_eval_images_reads_a_folder_of_labelled_images_end_to_end(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    for label in (3, 7):
        _digit_png(tmp_path, label).rename(folder / f"{label}_001.png")
    (folder / "1.png").write_bytes((folder / "7_001.png").read_bytes())  # a 7 labelled 1
    assert eval_main(["--images", str(folder), "--report", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "all: 2/3 read right (66.7%)" in out
    assert "1.png: '1' read as '7'" in out
    assert (tmp_path / "report" / "misread.png").is_file()
    assert eval_main(["--images", str(folder), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["file"], r["read"], r["right"]) for r in rows} == {
        ("1.png", "7", False), ("3_001.png", "3", True), ("7_001.png", "7", True)}


@pytest.mark.parametrize("args, message", [
    (["--images", "."], "either --dataset or --images"),
    ([], "either --dataset or --images"),
])
def test_eval_takes_exactly_one_of_dataset_and_images(args, message, capsys):
    full = ["--dataset", "digits", *args] if args else args
    assert eval_main(full) == 2
    assert message in capsys.readouterr().err


def test_eval_images_of_an_empty_folder_exits_2(tmp_path, capsys):
    assert eval_main(["--images", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "no labelled images" in err


def test_train_with_styled_digits_adds_them_and_records_it(tmp_path, capsys):
    out = tmp_path / "styled"
    assert train_main(["--dataset", "digits", "--styles", "200", "--epochs", "2",
                       "--quiet", "--out", str(out)]) == 0
    config = load_model(out).metadata["training"]["config"]
    assert config["styles"] == 200


def test_fine_tune_from_a_model_on_mixed_sources_reports_each_held_out_part(trained, tmp_path,
                                                                          capsys):
    mine = bars_folder(tmp_path / "mine")
    out = tmp_path / "tuned"
    assert train_main(["--dataset", "digits", "--dataset", f"folder:{mine}*3", "--scheme",
                       "optdigits", "--init", str(trained), "--epochs", "2", "--lr", "0.0005",
                       "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "starting from" in printed and "folder:mine: " in printed and "digits: " in printed
    meta = load_model(out).metadata
    start = load_model(trained)
    assert meta["training"]["init"]["version"] == start.version
    assert meta["training"]["sources"]["folder:mine"]["weight"] == 3
    by_source = meta["metrics"]["by_source"]
    assert by_source["folder:mine"]["size"] == 4 and by_source["digits"]["size"] == 359
    assert meta["training"]["config"]["hidden"] == [64]  # the start's layers, not the default
    assert by_source["digits"]["accuracy"] > start.metadata["metrics"]["test_accuracy"] - 0.05


@pytest.mark.parametrize(("extra", "message"), [
    (["--hidden", "32"], "cannot start from a mlp layers 64-64-10 (relu) network"),
    (["--features", "pixels"], "reads gradients, not --features pixels"),
    (["--negatives", "50"], "has no non-character output"),
])  # fmt: skip
def test_an_init_model_that_does_not_fit_exits_2_and_writes_nothing(trained, tmp_path, capsys,
                                                                   extra, message):
    code = train_main(["--dataset", "digits", "--init", str(trained), "--epochs", "1", *extra,
                       "--out", str(tmp_path / "m")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err
    assert list(tmp_path.iterdir()) == []


def test_an_init_model_of_another_scheme_or_missing_exits_2(trained, tmp_path, capsys):
    assert train_main(["--dataset", "mnist5k", "--init", str(trained), "--out",
                       str(tmp_path / "m")]) == 2  # fmt: skip
    assert "reads the optdigits scheme, the data is mnist" in capsys.readouterr().err
    assert train_main(["--dataset", "digits", "--init", str(tmp_path / "none"), "--out",
                       str(tmp_path / "m")]) == 2  # fmt: skip
    assert "not found" in capsys.readouterr().err
