import numpy as np
import pytest

from ocr_service.datasets import load_dataset, split_dataset
from ocr_service.training import (
    MIN_REJECT_THRESHOLD,
    TrainConfig,
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
    assert evaluate(result.network, *splits.test)["accuracy"] >= 0.98


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
    assert evaluate(result.network, *splits.val)["accuracy"] == pytest.approx(
        best["val_accuracy"])


def test_patience_zero_runs_every_epoch(digits):
    _, splits = digits
    result = train(TrainConfig(epochs=4, patience=0), splits.train, splits.val, 10)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"} <= set(
        result.history[0])


def test_training_without_validation_keeps_the_last_weights(digits):
    _, splits = digits
    result = train(TrainConfig(epochs=2, patience=5), splits.train, None, 10)
    assert result.best_epoch == 2 and result.reject_threshold is None


def test_sgd_with_nesterov_momentum_learns(digits):
    _, splits = digits
    config = TrainConfig(optimizer="sgd", lr=0.05, epochs=10, patience=0)
    result = train(config, splits.train, splits.val, 10)
    assert evaluate(result.network, *splits.test)["accuracy"] > 0.95


def test_augmentation_changes_what_is_learned_and_still_learns():
    dataset = load_dataset("mnist5k")
    splits = split_dataset(dataset, seed=0)
    pick = np.random.default_rng(0).permutation(len(splits.train[1]))[:1500]
    subset = (splits.train[0][pick], splits.train[1][pick])
    config = TrainConfig(epochs=6, patience=0, hidden=(128,))
    plain = train(config, subset, None, 10)
    config.augment = True
    augmented = train(config, subset, None, 10)
    assert not np.array_equal(plain.network.state_dict()["layer0.W"],
                              augmented.network.state_dict()["layer0.W"])
    assert evaluate(augmented.network, *splits.test)["accuracy"] > 0.85


def test_reject_threshold_is_calibrated_on_validation_and_helps(digits):
    _, splits = digits
    result = train(TrainConfig(epochs=2, patience=0), splits.train, splits.val, 10)
    threshold = calibrate_reject_threshold(result.network, *splits.val)
    assert threshold == result.reject_threshold
    probs = result.network.predict_proba(splits.val[0].reshape(len(splits.val[0]), -1))
    right = probs.argmax(1) == splits.val[1]
    rejected = probs.max(1) < threshold
    assert MIN_REJECT_THRESHOLD <= threshold < 1.0
    assert rejected.any() and right[~rejected].mean() > right.mean()


def test_reject_threshold_has_a_floor_when_low_confidence_answers_are_right():
    class Scripted:
        """Predicts class 0 with probability x[0]."""

        n_classes = 2

        def predict_proba(self, x):
            p = x[:, :1]
            return np.hstack([p, 1 - p])

    images = np.array([0.9, 0.8, 0.7, 0.6], np.float32).reshape(4, 1, 1)
    assert calibrate_reject_threshold(Scripted(), images, np.zeros(4, np.int64)) == (
        MIN_REJECT_THRESHOLD)
    labels = np.array([0, 0, 0, 1])  # the least sure answer is wrong
    threshold = calibrate_reject_threshold(Scripted(), images, labels)
    assert threshold == pytest.approx(0.65)


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


@pytest.fixture
def two_core_rule(monkeypatch):
    """The data-parallel rule switched on for small networks (as if digits were large)."""
    import ocr_service.training as training

    monkeypatch.setattr(training, "SMALL_MATMUL", 0)
    monkeypatch.setattr(training, "_blas_limit", lambda: 2)
    return training


def test_data_parallel_step_gives_the_whole_batch_gradient(two_core_rule):
    from ocr_service.nn import MLP
    from ocr_service.nn.losses import SoftmaxCrossEntropy
    from ocr_service.nn.optim import Adam

    rng = np.random.default_rng(0)
    x, y = rng.random((65, 20), np.float32), rng.integers(0, 10, 65)
    serial = MLP.build(20, 10, hidden=(16,), seed=0)
    net = MLP.build(20, 10, hidden=(16,), seed=0)
    assert two_core_rule._data_parallel(net, 65)
    parallel = two_core_rule._DataParallel(net, SoftmaxCrossEntropy(), Adam(net.param_pairs()))
    try:
        loss, correct = parallel.step(x, y)
    finally:
        parallel.worker.close()
    serial_loss, serial_correct = two_core_rule._batch_step(serial, SoftmaxCrossEntropy(), x, y)
    np.testing.assert_allclose(net.flat_grads, serial.flat_grads, rtol=1e-5, atol=1e-7)
    assert loss == pytest.approx(serial_loss, rel=1e-6) and correct == serial_correct


def test_data_parallel_training_is_reproducible_and_learns(digits, two_core_rule):
    _, splits = digits
    config = TrainConfig(seed=1, epochs=4, patience=0)
    a = train(config, splits.train, None, 10).network
    b = train(config, splits.train, None, 10).network
    assert all(np.array_equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert evaluate(a, *splits.test)["accuracy"] >= 0.95


def test_worker_hands_exceptions_back_to_the_caller():
    from ocr_service.training import _Worker

    worker = _Worker()
    try:
        worker.submit(int, "not a number")
        with pytest.raises(ValueError):
            worker.result()
        worker.submit(sum, [1, 2])
        assert worker.result() == 3
    finally:
        worker.close()


def test_negatives_add_a_non_character_output_that_is_never_the_answer(digits):
    dataset, splits = digits
    config = TrainConfig(hidden=(32,), epochs=8, patience=0, negatives=300)
    result = train(config, splits.train, splits.val, 10, scheme=dataset.scheme)
    assert result.network.n_classes == 11
    probs = result.network.predict_proba(splits.test[0].reshape(len(splits.test[0]), -1))
    assert probs.shape[1] == 11
    metrics = evaluate(result.network, *splits.test, n_classes=10)
    assert metrics["accuracy"] > 0.85  # still reads the digits
    with pytest.raises(ValueError, match="scheme"):
        train(config, splits.train, splits.val, 10)


def test_one_thread_processes_and_small_networks_train_on_one_thread():
    from threadpoolctl import threadpool_limits

    from ocr_service.nn import MLP
    from ocr_service.training import _data_parallel

    large = MLP.build(784, 10, hidden=(512, 512))
    with threadpool_limits(1, user_api="blas"):  # OPENBLAS_NUM_THREADS=1, a serving worker
        assert not _data_parallel(large, 128)
    with threadpool_limits(2, user_api="blas"):
        assert _data_parallel(large, 128)
        assert not _data_parallel(MLP.build(64, 10, hidden=(128,)), 64)  # digits: too small
