import threading

import numpy as np
import pytest

from ocr_service.nn import MLP, network_from_config
from ocr_service.nn.losses import SoftmaxCrossEntropy
from ocr_service.nn.optim import Adam
from ocr_testing.gradcheck import numerical_grad, relative_error


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid"])
def test_three_layer_network_gradients_match_central_differences(activation):
    rng = np.random.default_rng(1)
    net = MLP.build(6, 3, hidden=(7, 5), activation=activation, seed=2, dtype=np.float64)
    x = rng.standard_normal((4, 6))
    y = np.array([0, 2, 1, 2])
    loss = SoftmaxCrossEntropy()

    def value() -> float:
        return loss.forward(net.forward(x, training=True), y)

    value()
    net.backward(loss.backward())
    analytic = {k: g.copy() for k, g in net.grads_dict().items()}
    for name, param in net.state_dict().items():
        assert relative_error(analytic[name], numerical_grad(value, param)) < 1e-6, name


def test_learns_xor_perfectly():
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0])
    net = MLP.build(2, 2, hidden=(8,), activation="tanh", seed=0)
    loss, opt = SoftmaxCrossEntropy(), Adam(net.param_pairs(), lr=0.05)
    for _ in range(300):
        loss.forward(net.forward(x, training=True), y)
        net.backward(loss.backward())
        opt.step()
    assert net.predict_proba(x).argmax(axis=1).tolist() == [0, 1, 1, 0]


def test_training_runs_in_float32_end_to_end():
    net = MLP.build(10, 4, hidden=(8,), dropout=0.2)
    x = np.random.default_rng(0).random((16, 10), dtype=np.float32)
    logits = net.forward(x, training=True)
    assert logits.dtype == np.float32
    loss = SoftmaxCrossEntropy()
    loss.forward(logits, np.zeros(16, dtype=np.int64))
    assert net.backward(loss.backward()).dtype == np.float32
    assert all(g.dtype == np.float32 for _, g in net.param_pairs())


def test_predict_proba_matches_forward_and_is_thread_safe():
    net = MLP.build(64, 10, hidden=(32, 16), seed=3)
    rng = np.random.default_rng(0)
    inputs = [rng.random((5, 64), dtype=np.float32) for _ in range(8)]
    expected = [net.predict_proba(x) for x in inputs]
    logits = net.forward(inputs[0], training=False)
    assert np.allclose(expected[0], np.exp(logits) / np.exp(logits).sum(1, keepdims=True),
                       atol=1e-6)
    results: dict[int, list[bool]] = {}

    def worker(k: int) -> None:
        results[k] = [np.array_equal(net.predict_proba(x), e)
                      for _ in range(50) for x, e in zip(inputs, expected, strict=True)]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(all(r) for r in results.values())


def test_config_round_trip_rebuilds_the_same_function():
    net = MLP.build(12, 3, hidden=(9,), activation="tanh", dropout=0.1, seed=5)
    clone = network_from_config(net.config())
    clone.load_state_dict({k: v.copy() for k, v in net.state_dict().items()})
    x = np.random.default_rng(1).random((4, 12), dtype=np.float32)
    assert np.array_equal(clone.predict_proba(x), net.predict_proba(x))
    assert clone.config() == net.config()


def test_load_state_dict_rejects_wrong_names_and_shapes():
    net = MLP.build(4, 2, hidden=(3,))
    state = {k: v.copy() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="shape"):
        net.load_state_dict({**state, "layer0.W": np.zeros((4, 4), np.float32)})
    with pytest.raises(ValueError, match="missing"):
        net.load_state_dict({k: v for k, v in state.items() if k != "layer0.b"})


def test_same_seed_gives_identical_weights_and_different_seed_does_not():
    a, b, c = (MLP.build(20, 5, hidden=(10,), seed=s) for s in (1, 1, 2))
    assert all(np.array_equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not np.array_equal(a.state_dict()["layer0.W"], c.state_dict()["layer0.W"])


@pytest.mark.parametrize("kwargs", [dict(activation="swish"), dict(hidden=(0,))])
def test_build_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        MLP.build(4, 2, **kwargs)
