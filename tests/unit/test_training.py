import numpy as np
import pytest

from ocr_service.datasets import load_dataset, split_dataset
from ocr_service.training import (
    MIN_REJECT_EVIDENCE,
    MIN_REJECT_THRESHOLD,
    TrainConfig,
    _Best,
    build_network,
    calibrate_reject_threshold,
    evaluate,
    train,
)


@pytest.fixture(scope="module")
def digits():
    dataset = load_dataset("digits")
    return dataset, split_dataset(dataset, seed=0)


def test_default_config_reaches_98_percent_on_held_out_digits(digits):
    dataset, splits = digits
    result = train(TrainConfig(seed=0), splits.train, splits.val, len(dataset.classes))
    assert evaluate(result.network, *splits.test, features="pixels")["accuracy"] >= 0.98


def test_same_seed_gives_bit_identical_weights(digits):
    _, splits = digits
    config = TrainConfig(seed=3, epochs=3, patience=0, dropout=0.2)
    a = train(config, splits.train, splits.val, 10).network.state_dict()
    b = train(config, splits.train, splits.val, 10).network.state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = train(TrainConfig(seed=4, epochs=3, patience=0), splits.train, splits.val, 10)
    assert not np.array_equal(a["layer0.W"], c.network.state_dict()["layer0.W"])


def test_early_stopping_restores_the_best_epoch(digits):
    _, splits = digits
    # a learning rate this high makes validation accuracy collapse after a few epochs
    result = train(TrainConfig(epochs=40, patience=3, lr=0.5, schedule="constant",
                               clip_norm=0.0), splits.train, splits.val, 10)
    history = result.history
    assert len(history) < 40
    best = max(history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    assert result.best_epoch == best["epoch"]
    assert evaluate(result.network, *splits.val, features="pixels")["accuracy"] == pytest.approx(
        best["val_accuracy"])


def test_patience_zero_runs_every_epoch(digits):
    _, splits = digits
    result = train(TrainConfig(epochs=4, patience=0), splits.train, splits.val, 10)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"} <= set(
        result.history[0])


def test_patience_zero_keeps_the_best_epoch_of_the_second_half():
    # Early in a schedule, at a high learning rate, a network can top the validation images
    # by luck, undertrained: a run to the end of its schedule keeps one from its second half.
    network = build_network(TrainConfig(hidden=(8,)), 64, 10)
    best = _Best(first=3)
    weights = []
    for epoch, accuracy in enumerate((0.99, 0.95, 0.93, 0.94, 0.92), start=1):
        for value in network.state_dict().values():
            value += 1.0  # each epoch's weights differ
        weights.append({k: v.copy() for k, v in network.state_dict().items()})
        best.update(epoch, {"accuracy": accuracy, "loss": 0.1}, network)
    assert best.restore(network, 5) == 4
    for key, value in network.state_dict().items():
        np.testing.assert_array_equal(value, weights[3][key])


def _wrong_labels_run(splits, init=None):
    """Trained on labels shifted by one, a network reads the validation images worse with
    every epoch after the first few (on digits, from scratch: 0.13 at the second, 0.03 to
    0.01 after the third)."""
    images, labels = splits.train
    return train(TrainConfig(epochs=6, patience=0, lr=2e-4), (images, (labels + 1) % 10),
                 splits.val, 10, init=init)


def test_patience_zero_from_scratch_never_keeps_a_first_half_epoch(digits):
    _, splits = digits
    result = _wrong_labels_run(splits)
    history = result.history
    assert max(h["val_accuracy"] for h in history[:3]) > 2 * max(
        h["val_accuracy"] for h in history[3:])
    best = max(history[3:], key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    assert result.best_epoch == best["epoch"]


def test_patience_zero_fine_tune_may_keep_its_first_epoch(digits):
    # A fine-tune starts from a trained network: its first epochs are not undertrained.
    _, splits = digits
    start = train(TrainConfig(epochs=3, patience=0), splits.train, splits.val, 10)
    result = _wrong_labels_run(splits, init=start.network)
    best = max(result.history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    assert best["epoch"] <= 3 and result.best_epoch == best["epoch"]


def test_keep_last_ends_with_the_last_epoch_even_when_validation_says_otherwise(digits):
    _, splits = digits
    images, labels = splits.train
    config = TrainConfig(epochs=6, patience=2, lr=2e-4, keep="last")
    result = train(config, (images, (labels + 1) % 10), splits.val, 10)  # worse every epoch
    assert len(result.history) == 6 and result.best_epoch == 6  # no early stopping either
    last = result.history[-1]
    assert evaluate(result.network, *splits.val, features="pixels")["accuracy"] == pytest.approx(
        last["val_accuracy"])
    assert last["val_accuracy"] < max(h["val_accuracy"] for h in result.history)
    with pytest.raises(ValueError, match="keep"):
        train(TrainConfig(epochs=1, keep="first"), splits.train, splits.val, 10)


def test_training_without_validation_keeps_the_last_weights(digits):
    _, splits = digits
    result = train(TrainConfig(epochs=2, patience=5), splits.train, None, 10)
    assert result.best_epoch == 2 and result.reject_threshold is None


def test_sgd_with_nesterov_momentum_learns(digits):
    _, splits = digits
    config = TrainConfig(optimizer="sgd", lr=0.05, epochs=10, patience=0)
    result = train(config, splits.train, splits.val, 10)
    assert evaluate(result.network, *splits.test, features="pixels")["accuracy"] > 0.95


@pytest.fixture(scope="module")
def mnist_subset():
    """mnist5k's splits and a random 1,500 of its training images (all classes)."""
    splits = split_dataset(load_dataset("mnist5k"), seed=0)
    pick = np.random.default_rng(0).permutation(len(splits.train[1]))[:1500]
    return splits, (splits.train[0][pick], splits.train[1][pick])


def test_augmentation_changes_what_is_learned_and_still_learns(mnist_subset):
    splits, subset = mnist_subset
    config = TrainConfig(epochs=6, patience=0, hidden=(128,))
    plain = train(config, subset, None, 10)
    config.augment = True
    augmented = train(config, subset, None, 10)
    assert not np.array_equal(plain.network.state_dict()["layer0.W"],
                              augmented.network.state_dict()["layer0.W"])
    assert evaluate(augmented.network, *splits.test, features="pixels")["accuracy"] > 0.85


def test_augmented_images_are_read_through_the_configured_features(mnist_subset):
    splits, subset = mnist_subset
    config = TrainConfig(epochs=5, patience=0, hidden=(128,), augment=True, features="gradients")
    result = train(config, subset, None, 10)
    assert result.features == "gradients"
    right = evaluate(result.network, *splits.test, features="gradients")["accuracy"]
    wrong = evaluate(result.network, *splits.test, features="pixels")["accuracy"]
    assert right > 0.85 and wrong < right - 0.2  # it learned the planes, not the pixels


def test_reject_threshold_is_calibrated_on_validation_and_helps(digits):
    _, splits = digits
    result = train(TrainConfig(epochs=2, patience=0), splits.train, splits.val, 10)
    threshold = calibrate_reject_threshold(result.network, *splits.val, features="pixels")
    assert threshold == result.reject_threshold
    probs = result.network.predict_proba(splits.val[0].reshape(len(splits.val[0]), -1))
    right = probs.argmax(1) == splits.val[1]
    rejected = probs.max(1) < threshold
    assert MIN_REJECT_THRESHOLD <= threshold < 1.0
    assert rejected.any() and right[~rejected].mean() > right.mean()


class Scripted:
    """Predicts class 0 with probability x[0]."""

    n_classes = 2

    def predict_proba(self, x):
        p = x[:, :1]
        return np.hstack([p, 1 - p])


def test_reject_threshold_has_a_floor_when_low_confidence_answers_are_right():
    images = np.array([0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6], np.float32).reshape(8, 1, 1)
    assert calibrate_reject_threshold(Scripted(), images, np.zeros(8, np.int64),
                                      features="pixels") == (
        MIN_REJECT_THRESHOLD)
    labels = np.array([0, 0, 0, 0, 1, 1, 0, 1])  # 3 of the 5 least sure answers are wrong
    threshold = calibrate_reject_threshold(Scripted(), images, labels, features="pixels")
    assert threshold == pytest.approx(0.825)  # between the 5th and 6th least sure


def _calibrated(confidences, wrong):
    """The threshold for answers of these confidences, the given ones wrong."""
    images = np.asarray(confidences, np.float32).reshape(-1, 1, 1)
    labels = np.zeros(len(images), np.int64)
    labels[list(wrong)] = 1
    return calibrate_reject_threshold(Scripted(), images, labels, features="pixels")


@pytest.mark.parametrize("n_wrong", range(1, MIN_REJECT_EVIDENCE + 1))
def test_the_threshold_needs_the_least_sure_answers_of_enough_images_to_be_mostly_wrong(
        n_wrong):
    # a well-trained network leaves a few errors, its least sure answers: one or two of them
    # are no evidence that the answers around them are wrong
    confidences = np.linspace(0.99, 0.5, 40)
    threshold = _calibrated(confidences, range(40 - n_wrong, 40))
    if 2 * n_wrong > MIN_REJECT_EVIDENCE:  # most of the 5 least sure answers
        mostly_wrong = 2 * n_wrong - 1  # the most answers of which n_wrong are a majority
        assert threshold == pytest.approx(
            (confidences[-mostly_wrong] + confidences[-mostly_wrong - 1]) / 2)
    else:
        assert threshold == MIN_REJECT_THRESHOLD


def test_copies_of_one_wrong_image_are_one_answer_of_evidence():
    # a weighted source (ocr-feedback retrain: *16) repeats its validation images
    confidences = [*np.linspace(1.0, 0.75, 500), *[0.72] * 16]
    assert _calibrated(confidences, range(500, 516)) == MIN_REJECT_THRESHOLD


def test_fewer_validation_images_than_the_evidence_needed_leave_the_floor():
    assert _calibrated([0.97, 0.95, 0.9], [1, 2]) == MIN_REJECT_THRESHOLD


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(model="cnn")])
def test_bad_configs_raise_value_error(digits, bad):
    _, splits = digits
    with pytest.raises(ValueError):
        train(TrainConfig(**bad), splits.train, splits.val, 10)


def test_empty_training_split_is_an_error():
    empty = (np.zeros((0, 8, 8), np.float32), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="empty"):
        train(TrainConfig(), empty, None, 10)


def test_a_diverging_run_stops_with_a_clear_error(digits):
    _, splits = digits
    config = TrainConfig(optimizer="sgd", lr=1e4, epochs=3, patience=0, clip_norm=0.0)
    with np.errstate(all="ignore"), pytest.raises(ValueError, match=r"diverged.*lower --lr"):
        train(config, splits.train, splits.val, 10)


def test_batches_gathered_several_at_a_time_follow_the_order(monkeypatch):
    import ocr_service.training as training

    # a gather of two batches at a time: 11 samples in batches of 3 span two gathers and
    # end with a partial batch
    monkeypatch.setattr(training, "GATHER_BYTES", 2 * 3 * 2 * 4)
    x = np.arange(22, dtype=np.float32).reshape(11, 2)
    y = np.arange(11) * 10
    order = np.random.default_rng(0).permutation(11)
    buffers = training._BatchBuffers(3, 2, len(x))
    got = [(xb.copy(), yb.copy()) for xb, yb in buffers.batches(x, y, order)]
    assert [len(yb) for _, yb in got] == [3, 3, 3, 2]
    np.testing.assert_array_equal(np.concatenate([xb for xb, _ in got]), x[order])
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in got]), y[order])
    assert len(buffers.y) == 6


def test_training_can_start_from_another_networks_weights(digits):
    _, splits = digits
    config = TrainConfig(epochs=8, patience=0, hidden=(32,))
    start = train(config, splits.train, splits.val, 10).network
    before = {k: v.copy() for k, v in start.state_dict().items()}
    fresh = train(TrainConfig(epochs=1, patience=0, hidden=(32,), seed=5), splits.train,
                  splits.val, 10)  # fmt: skip
    tuned = train(TrainConfig(epochs=1, patience=0, hidden=(32,), seed=5, lr=1e-4),
                  splits.train, splits.val, 10, init=start)  # fmt: skip
    assert tuned.history[0]["val_accuracy"] > fresh.history[0]["val_accuracy"] + 0.1
    assert all(np.array_equal(v, before[k]) for k, v in start.state_dict().items())


def test_a_network_of_another_architecture_cannot_be_the_start(digits):
    _, splits = digits
    start = train(TrainConfig(epochs=1, hidden=(32,)), splits.train, None, 10).network
    with pytest.raises(ValueError, match=r"cannot start from a mlp layers 64-32-10 \(relu\)"):
        train(TrainConfig(epochs=1, hidden=(16,)), splits.train, None, 10, init=start)
