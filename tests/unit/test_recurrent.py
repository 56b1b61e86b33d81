"""The recurrent backprop network: gradients, convergence, persistence, thread safety,
and that it learns handwritten digits."""

from __future__ import annotations

import io
import itertools
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ocr_service.nn import network_from_config
from ocr_service.nn.losses import SoftmaxCrossEntropy
from ocr_service.nn.recurrent import FixedPointError, RecurrentNetwork
from ocr_testing.gradcheck import numerical_grad, relative_error

D, H, C, N = 5, 6, 3, 4


def _small_net(activation: str = "tanh", *, w_scale: float = 1.0, **options) -> RecurrentNetwork:
    """A float64 network with tight tolerances, a non-trivial bias and a fixed ``sn_u``
    (no Lanczos refinement), so the function differentiated is the one evaluated."""
    options = {"tol": 1e-13, "max_iter": 1000, "spectral_steps": 0, **options}
    net = RecurrentNetwork(D, C, H, activation, seed=1, dtype=np.float64, **options)
    net.params["W"] *= w_scale
    net.params["b"][...] = np.random.default_rng(2).normal(size=H) * 0.3
    return net


def _batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, D)), rng.integers(0, C, N)


def _analytic_grads(net: RecurrentNetwork, x: np.ndarray, y: np.ndarray):
    loss = SoftmaxCrossEntropy()
    loss.forward(net.forward(x, training=True), y)
    dx = net.backward(loss.backward()).copy()
    return {k: g.copy() for k, g in net.grads.items()}, dx


def _loss(net: RecurrentNetwork, x: np.ndarray, y: np.ndarray) -> float:
    logits, _ = net.predict_logits_with_stats(x)
    return SoftmaxCrossEntropy().forward(logits, y)


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("w_scale", [1.0, 4.0], ids=["free", "normalised"])
def test_gradients_match_central_differences(activation: str, w_scale: float) -> None:
    net = _small_net(activation, w_scale=w_scale, spectral_bound=0.8)
    x, y = _batch()
    grads, dx = _analytic_grads(net, x, y)
    scale_active = not np.array_equal(net.effective_weight(), net.params["W"])
    assert scale_active == (w_scale > 1.0)
    for name, param in net.params.items():
        num = numerical_grad(lambda: _loss(net, x, y), param)
        assert relative_error(grads[name], num) < 1e-6, name
    assert relative_error(dx, numerical_grad(lambda: _loss(net, x, y), x)) < 1e-6


def _unrolled_grads(net: RecurrentNetwork, x: np.ndarray, y: np.ndarray, steps: int):
    """Reference: plain backprop through ``steps`` explicit damped tanh iterations."""
    p, beta = net.params, net.damping
    W = net.effective_weight()
    hs, ts = [np.zeros((len(x), net.hidden))], []
    for _ in range(steps):
        ts.append(np.tanh(hs[-1] @ W + x @ p["U"] + p["b"]))
        hs.append(hs[-1] + beta * (ts[-1] - hs[-1]))
    loss = SoftmaxCrossEntropy()
    loss.forward(hs[-1] @ p["R"] + p["c"], y)
    dlogits = loss.backward()
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    grads["R"], grads["c"] = hs[-1].T @ dlogits, dlogits.sum(axis=0)
    dh = dlogits @ p["R"].T
    for k in reversed(range(steps)):
        da = beta * dh * (1 - ts[k] ** 2)
        grads["W"] += hs[k].T @ da
        grads["U"] += x.T @ da
        grads["b"] += da.sum(axis=0)
        dh = (1 - beta) * dh + da @ W.T
    return grads


@pytest.mark.parametrize("damping", [1.0, 0.6])
def test_gradients_match_backprop_through_unrolled_iterations(damping: float) -> None:
    net = _small_net("tanh", w_scale=1.5, damping=damping, spectral_bound=0.95)
    assert np.array_equal(net.effective_weight(), net.params["W"])  # no rescaling here
    x, y = _batch(3)
    grads, _ = _analytic_grads(net, x, y)
    reference = _unrolled_grads(net, x, y, steps=400)
    for name in net.params:
        assert relative_error(grads[name], reference[name]) < 1e-5, name


def test_relaxations_converge_geometrically_and_report_iterations() -> None:
    net = _small_net("tanh", w_scale=4.0, spectral_bound=0.5, tol=1e-10)
    x, y = _batch()
    _analytic_grads(net, x, y)
    stats = net.training_stats()
    for which in ("forward", "backward"):
        res = net.last_residuals[which]
        assert len(res) == stats[f"{which}_iterations"]
        assert res[-1] <= 1e-10 < res[0]
        # contraction factor at most the spectral bound
        assert all(b <= 0.5 * a * 1.01 for a, b in itertools.pairwise(res[1:]))
    _, pstats = net.predict_proba_with_stats(x)
    assert pstats == {"iterations": stats["forward_iterations"]}


def test_nonconvergence_raises_a_clear_error() -> None:
    net = _small_net("tanh", w_scale=4.0, max_iter=3, tol=1e-12)
    x = _batch()[0]
    with pytest.raises(FixedPointError, match="forward relaxation did not converge in 3"):
        net.predict_proba(x)
    with pytest.raises(FixedPointError) as info:
        net.forward(x, training=True)
    assert info.value.iterations == 3 and info.value.residual > 1e-12


def test_float32_cannot_meet_a_float64_tolerance() -> None:
    net = RecurrentNetwork(D, C, 32, "tanh", tol=1e-12, max_iter=200)
    net.params["W"] *= 6.0
    with pytest.raises(FixedPointError, match="float32"):
        net.predict_proba(_batch()[0].astype(np.float32))


def test_spectral_bound_holds_for_any_weights() -> None:
    net = RecurrentNetwork(D, C, 40, "relu", spectral_bound=0.7, seed=3)
    rng = np.random.default_rng(0)
    # top singular values bunched together, the hard case for power iteration
    left, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    right, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    net.params["W"][...] = (left * np.linspace(5.0, 4.0, 40)) @ right.T
    cold = np.linalg.norm(net.effective_weight(), 2)
    assert 0.7 * 0.9999 <= cold <= 0.7 * 1.01
    for _ in range(3):  # training steps carry the estimate over and sharpen it
        net.forward(_batch()[0], training=True)
    assert np.linalg.norm(net.effective_weight(), 2) == pytest.approx(0.7, rel=1e-4)


def test_state_dict_round_trips_through_npz_and_json() -> None:
    net = RecurrentNetwork.build(D, C, hidden=(16, 99), activation="relu", dropout=0.2,
                                 seed=4, max_iter=60, tol=1e-5, spectral_bound=0.8)
    x, y = _batch()
    _analytic_grads(net, x.astype(np.float32), y)
    # an Adam-like step after the last forward (sign of a rank-1 gradient, lr 0.01) adds a
    # direction the stored power-iteration vector has not seen: inference must cope
    rng = np.random.default_rng(5)
    net.params["W"] += 0.01 * np.sign(np.outer(rng.normal(size=16), rng.normal(size=16)))
    buffer = io.BytesIO()
    np.savez(buffer, **net.state_dict())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as stored:
        weights = dict(stored)
    config = json.loads(json.dumps(net.config()))
    twin = network_from_config(config, dtype=np.float32)
    assert isinstance(twin, RecurrentNetwork) and twin.config() == net.config()
    assert twin.hidden == 16 and twin.kind == "rbp"
    twin.load_state_dict(weights)
    np.testing.assert_array_equal(twin.predict_proba(x), net.predict_proba(x))
    with pytest.raises(ValueError, match="missing"):
        twin.load_state_dict({k: v for k, v in weights.items() if k != "sn_u"})
    with pytest.raises(ValueError, match="shape"):
        twin.load_state_dict({**weights, "b": np.zeros(3, np.float32)})


def test_predict_proba_is_thread_safe() -> None:
    net = RecurrentNetwork(64, 10, 48, "tanh", seed=5)
    rng = np.random.default_rng(0)
    inputs = [rng.random((int(n), 64), dtype=np.float32) for n in rng.integers(1, 30, 40)]
    expected = [net.predict_proba(x) for x in inputs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(net.predict_proba, inputs))
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(e, g)
        np.testing.assert_allclose(g.sum(axis=1), 1.0, rtol=1e-5)


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="spectral_bound"):
        RecurrentNetwork(D, C, H, spectral_bound=1.0)
    with pytest.raises(ValueError, match="activation"):
        RecurrentNetwork(D, C, H, "swish")
    with pytest.raises(ValueError, match="damping"):
        RecurrentNetwork(D, C, H, damping=0.0)
    with pytest.raises(RuntimeError, match="before forward"):
        RecurrentNetwork(D, C, H).backward(np.zeros((N, C), np.float32))


def test_learns_handwritten_digits() -> None:
    from ocr_service.datasets import load_dataset, split_dataset
    from ocr_service.training import TrainConfig, evaluate, train

    ds = load_dataset("digits")
    splits = split_dataset(ds, seed=0)
    config = TrainConfig(model="rbp", hidden=(128,), activation="relu", epochs=15, lr=5e-3,
                         patience=0, seed=0)
    result = train(config, splits.train, splits.val, len(ds.classes))
    assert evaluate(result.network, *splits.test, features="pixels")["accuracy"] >= 0.95
    last = result.history[-1]
    assert 1 < last["forward_iterations"] < result.network.max_iter
    assert 1 < last["backward_iterations"] < result.network.max_iter
