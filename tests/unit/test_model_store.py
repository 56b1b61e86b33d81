import json
import os
import threading

import numpy as np
import pytest

from ocr_service.model_store import (
    ChecksumMismatchError,
    ModelFormatError,
    ModelNotFoundError,
    ShapeMismatchError,
    artifact_paths,
    default_model_path,
    load_model,
    save_model,
)
from ocr_service.nn import MLP

META = {
    "classes": [str(d) for d in range(10)],
    "input": {"height": 8, "width": 8, "scheme": "optdigits", "features": "pixels"},
    "calibration": {"reject_threshold": 0.4},
    "training": {"dataset": "digits", "seed": 0, "epochs": 1, "history": []},
    "metrics": {"test_accuracy": 0.5, "test_size": 10},
}


@pytest.fixture
def saved(tmp_path):
    net = MLP.build(64, 10, hidden=(16,), seed=1)
    save_model(tmp_path / "m", net, META)
    return tmp_path / "m", net


def test_round_trip_rebuilds_the_network_from_json_alone(saved):
    base, net = saved
    artifact = load_model(base)
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    assert np.array_equal(artifact.network.predict_proba(x), net.predict_proba(x))
    assert artifact.classes == META["classes"]
    assert (artifact.kind, artifact.scheme, artifact.input_shape) == ("mlp", "optdigits", (8, 8))
    assert artifact.reject_threshold == 0.4
    assert artifact.name == "m" and len(artifact.version) == 12


def test_json_follows_the_documented_contract(saved):
    base, _ = saved
    meta = json.loads((base.parent / "m.json").read_text())
    for key in ("format", "kind", "classes", "input", "layers", "training", "metrics",
                "sha256", "created", "version"):
        assert key in meta
    assert meta["format"] == 1 and meta["kind"] == "mlp"
    assert meta["layers"][0] == {"type": "dense", "in": 64, "out": 16, "init": "he"}


def test_npz_holds_plain_arrays_loadable_without_pickle(saved):
    base, _ = saved
    with np.load(base.parent / "m.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == ["layer0.W", "layer0.b", "layer2.W", "layer2.b"]
        assert npz["layer0.W"].dtype == np.float32


@pytest.mark.parametrize("given", ["m", "m.npz", "m.json"])
def test_any_of_the_three_path_spellings_works(saved, given):
    base, _ = saved
    assert load_model(base.parent / given).path == base


def test_missing_files_are_reported(tmp_path, saved):
    with pytest.raises(ModelNotFoundError):
        load_model(tmp_path / "nothing")
    base, _ = saved
    os.remove(artifact_paths(base)[0])
    with pytest.raises(ModelNotFoundError, match="weights"):
        load_model(base)


def test_checksum_mismatch_is_refused(saved):
    base, _ = saved
    npz = artifact_paths(base)[0]
    data = bytearray(npz.read_bytes())
    data[-10] ^= 0xFF
    npz.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError):
        load_model(base, retries=1, retry_delay=0)


def _edit_json(base, change):
    path = artifact_paths(base)[1]
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("change, error", [
    (lambda m: m.update(format=3), ModelFormatError),
    (lambda m: m.update(format=True), ModelFormatError),
    (lambda m: m.pop("sha256"), ModelFormatError),
    (lambda m: m.update(kind="transformer"), ModelFormatError),
    (lambda m: m.update(classes=["a", "b"]), ShapeMismatchError),
    (lambda m: m["input"].update(scheme="mnist", height=28, width=28), ShapeMismatchError),
    (lambda m: m["input"].update(scheme="svhn"), ModelFormatError),
    (lambda m: m["input"].update(scheme=[]), ModelFormatError),
    (lambda m: m["input"].update(features="hog"), ModelFormatError),
    (lambda m: m["input"].update(features=["gradients"]), ModelFormatError),
    (lambda m: m.update(non_character=True), ShapeMismatchError),  # 10 outputs, not 11
    (lambda m: m.update(non_character="yes"), ModelFormatError),
    (lambda m: m.update(calibration="x"), ModelFormatError),
    (lambda m: m["calibration"].update(reject_threshold="high"), ModelFormatError),
    (lambda m: m.update(layers=[1]), ModelFormatError),
    (lambda m: m.update(layers="abc"), ModelFormatError),
    (lambda m: m.update(options=[]), ModelFormatError),
    (lambda m: m.update(training=[]), ModelFormatError),
    (lambda m: m["layers"][1].update(type=["relu"]), ModelFormatError),
    (lambda m: m["layers"][0].update(out=17), ModelFormatError),  # layers do not chain
    (lambda m: (m["layers"][0].update(out=17), m["layers"][2].update({"in": 17})),
     ShapeMismatchError),  # consistent JSON, weights of another shape
])
def test_inconsistent_metadata_is_refused(saved, change, error):
    base, _ = saved
    _edit_json(base, change)
    with pytest.raises(error):
        load_model(base)


def test_garbage_json_is_a_format_error(saved):
    base, _ = saved
    artifact_paths(base)[1].write_text("{not json")
    with pytest.raises(ModelFormatError):
        load_model(base)


def test_non_finite_weights_are_refused(tmp_path):
    net = MLP.build(64, 10, hidden=(4,))
    net.state_dict()["layer0.W"][0, 0] = np.nan
    save_model(tmp_path / "nan", net, META)
    with pytest.raises(ModelFormatError, match="NaN"):
        load_model(tmp_path / "nan")


def test_a_non_character_output_is_one_more_than_the_classes(tmp_path):
    net = MLP.build(64, 11, hidden=(8,), seed=2)
    with pytest.raises(ModelFormatError, match="11 outputs"):
        save_model(tmp_path / "m", net, META)
    artifact = save_model(tmp_path / "m", net, {**META, "non_character": True})
    loaded = load_model(tmp_path / "m")
    assert loaded.non_character and artifact.non_character
    assert loaded.classes == META["classes"] and loaded.network.n_classes == 11
    save_model(tmp_path / "plain", MLP.build(64, 10, hidden=(8,)), META)
    assert not load_model(tmp_path / "plain").non_character


def test_save_rejects_metadata_that_does_not_fit(tmp_path):
    net = MLP.build(64, 10, hidden=(4,))
    with pytest.raises(ModelFormatError):
        save_model(tmp_path / "x", net, {**META, "classes": ["a"]})
    with pytest.raises(ShapeMismatchError):
        save_model(tmp_path / "x", net, {**META, "input":
                                         {"height": 28, "width": 28, "scheme": "mnist",
                                          "features": "pixels"}})
    assert list(tmp_path.iterdir()) == []


def test_save_leaves_no_temporary_files_and_readable_permissions(saved):
    base, _ = saved
    assert sorted(p.name for p in base.parent.iterdir()) == ["m.json", "m.npz"]
    assert all(p.stat().st_mode & 0o044 for p in base.parent.iterdir())


def test_readers_never_see_a_torn_model_while_it_is_rewritten(tmp_path):
    nets = [MLP.build(64, 10, hidden=(32,), seed=s) for s in range(2)]
    save_model(tmp_path / "m", nets[0], META)
    errors, loads = [], [0]
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                load_model(tmp_path / "m")
                loads[0] += 1
            except Exception as exc:  # any failure is a torn read
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(40):
        save_model(tmp_path / "m", nets[i % 2], META)
    stop.set()
    thread.join()
    assert errors == [] and loads[0] > 0


def test_default_model_path_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OCR_MODEL_PATH", str(tmp_path / "x.npz"))
    assert default_model_path() == tmp_path / "x"
    monkeypatch.delenv("OCR_MODEL_PATH")
    assert default_model_path().parts[-2:] == ("models", "default")


def test_default_model_path_expands_the_home_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("OCR_MODEL_PATH", "~/models/mine.npz")
    assert default_model_path() == tmp_path / "models" / "mine"


def test_a_save_killed_between_the_two_renames_leaves_the_old_model_loadable(
        tmp_path, monkeypatch):
    import ocr_service.model_store as store

    old = save_model(tmp_path / "m", MLP.build(64, 10, hidden=(8,), seed=1), META)
    real_write = store.atomic_write

    def die_before_the_json(target, data):
        if target.suffix == ".json":
            raise KeyboardInterrupt  # stands in for SIGKILL after the .npz rename
        real_write(target, data)

    monkeypatch.setattr(store, "atomic_write", die_before_the_json)
    with pytest.raises(KeyboardInterrupt):
        save_model(tmp_path / "m", MLP.build(64, 10, hidden=(8,), seed=2), META)
    monkeypatch.setattr(store, "atomic_write", real_write)
    # the new weights are in place, the JSON is the old one: the backup serves the old pair
    assert load_model(tmp_path / "m", retries=0).version == old.version
    new = save_model(tmp_path / "m", MLP.build(64, 10, hidden=(8,), seed=3), META)
    assert load_model(tmp_path / "m").version == new.version != old.version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.npz"]


def test_default_model_path_falls_back_to_the_wheel_installed_copy(monkeypatch, tmp_path):
    import ocr_service.model_store as store

    monkeypatch.delenv("OCR_MODEL_PATH", raising=False)
    monkeypatch.setattr(store, "_REPO_ROOT", tmp_path / "site-packages")
    monkeypatch.setattr(store, "_INSTALLED_MODELS", tmp_path / "share")
    assert default_model_path() == tmp_path / "site-packages" / "models" / "default"
    save_model(tmp_path / "share" / "default", MLP.build(64, 10, hidden=(4,)), META)
    assert default_model_path() == tmp_path / "share" / "default"
    assert load_model().classes == META["classes"]


def test_input_features_are_recorded_and_old_artifacts_read_pixels(tmp_path, saved):
    base, _ = saved
    assert load_model(base).features == "pixels"
    _edit_json(base, lambda m: m["input"].pop("features"))  # as written before the field
    assert load_model(base).features == "pixels"
    meta = {**META, "input": {**META["input"], "features": "gradients"}}
    net = MLP.build(64, 10, hidden=(8,))  # 8x8 images: 4 planes of 4x4 = 64 inputs, too
    save_model(tmp_path / "g", net, meta)
    assert load_model(tmp_path / "g").features == "gradients"
    with pytest.raises(ShapeMismatchError, match="gradients"):
        save_model(tmp_path / "g28", net, {**meta, "input": {
            "height": 28, "width": 28, "scheme": "mnist", "features": "gradients"}})


def test_a_concavity_model_records_its_features_and_needs_their_input_count(tmp_path):
    meta = {**META, "input": {**META["input"], "features": "gradients+concavity"}}
    save_model(tmp_path / "c", MLP.build(84, 10, hidden=(8,)), meta)  # 8x8: 64 + 5 x 2 x 2
    artifact = load_model(tmp_path / "c")
    assert artifact.features == "gradients+concavity" and artifact.metadata["format"] == 2
    with pytest.raises(ShapeMismatchError, match="concavity"):
        save_model(tmp_path / "g", MLP.build(64, 10, hidden=(8,)), meta)


def test_a_model_that_does_not_read_pixels_is_a_format_older_servers_refuse(tmp_path, saved):
    base, net = saved
    assert json.loads(artifact_paths(base)[1].read_text())["format"] == 1  # pixels: readable
    meta = {**META, "input": {**META["input"], "features": "gradients"}}
    save_model(tmp_path / "g", net, meta)
    assert json.loads(artifact_paths(tmp_path / "g")[1].read_text())["format"] == 2
    for broken, change in [(base, lambda m: m["input"].update(features="gradients")),
                           (tmp_path / "g", lambda m: m["input"].pop("features")),
                           (tmp_path / "g", lambda m: m.update(format=3))]:
        _edit_json(broken, change)
        with pytest.raises(ModelFormatError):
            load_model(broken)


def test_saving_without_naming_the_input_features_is_refused(tmp_path):
    net = MLP.build(64, 10, hidden=(4,))
    meta = {**META, "input": {k: v for k, v in META["input"].items() if k != "features"}}
    with pytest.raises(ModelFormatError, match="features"):
        save_model(tmp_path / "x", net, meta)
    assert list(tmp_path.iterdir()) == []
