import numpy as np
import pytest

from ocr_service.nn.layers import (
    ACTIVATIONS,
    Dense,
    Dropout,
    LeakyReLU,
    layer_from_config,
)
from ocr_testing.gradcheck import numerical_grad, relative_error

RNG = np.random.default_rng(42)


def _projected_loss(layer, x, proj):
    """A scalar loss sum(proj * layer(x)) whose gradient wrt the output is ``proj``."""
    return lambda: float((layer.forward(x.copy(), training=True) * proj).sum())


def _input_grad_error(layer, x) -> float:
    """Relative error of the layer's dL/dx against central differences."""
    proj = RNG.standard_normal(x.shape)
    layer.forward(x.copy(), training=True)
    analytic = layer.backward(proj.copy())
    return relative_error(analytic, numerical_grad(_projected_loss(layer, x, proj), x))


def test_dense_gradients_match_central_differences():
    layer = Dense(5, 4, rng=np.random.default_rng(0), dtype=np.float64)
    x = RNG.standard_normal((3, 5))
    proj = RNG.standard_normal((3, 4))
    layer.forward(x, training=True)
    dx = layer.backward(proj.copy()).copy()
    loss = _projected_loss(layer, x, proj)
    for name in ("W", "b"):
        numeric = numerical_grad(loss, layer.params[name])
        assert relative_error(layer.grads[name], numeric) < 1e-6, name
    numeric_x = numerical_grad(lambda: float(((x @ layer.params["W"]) * proj).sum()), x)
    assert relative_error(dx, numeric_x) < 1e-6


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_gradients_match_central_differences(name):
    layer = ACTIVATIONS[name]()
    # keep inputs away from the kinks of relu/leaky relu where the derivative jumps
    x = RNG.uniform(0.05, 2.0, (4, 6)) * RNG.choice([-1.0, 1.0], (4, 6))
    assert _input_grad_error(layer, x) < 1e-6


def test_activations_compute_the_textbook_functions():
    z = np.array([[-3.0, -0.5, 0.0, 0.5, 3.0]])
    assert np.allclose(ACTIVATIONS["relu"]().forward(z.copy()), np.maximum(z, 0))
    assert np.allclose(ACTIVATIONS["tanh"]().forward(z.copy()), np.tanh(z))
    assert np.allclose(ACTIVATIONS["sigmoid"]().forward(z.copy()), 1 / (1 + np.exp(-z)))
    assert np.allclose(LeakyReLU(0.1).forward(z.copy()), np.where(z > 0, z, 0.1 * z))


def test_sigmoid_does_not_overflow_on_huge_inputs():
    with np.errstate(all="raise"):
        y = ACTIVATIONS["sigmoid"]().forward(np.array([[-1e4, 1e4]], dtype=np.float32))
    assert y.tolist() == [[0.0, 1.0]]


def test_dropout_with_fixed_mask_has_exact_gradient():
    layer = Dropout(0.5)
    x = RNG.standard_normal((3, 8))
    layer.mask = (RNG.random((3, 8)) < 0.5) / 0.5
    layer.fixed_mask = True
    assert _input_grad_error(layer, x) < 1e-6


def test_dropout_is_inverted_and_identity_at_inference():
    layer = Dropout(0.25, rng=np.random.default_rng(1))
    x = np.ones((2000, 50), dtype=np.float32)
    out = layer.forward(x.copy(), training=True)
    assert set(np.unique(out)) == {0.0, np.float32(1 / 0.75)}
    assert abs(out.mean() - 1.0) < 0.02  # inverted scaling keeps the expectation
    assert np.array_equal(layer.forward(x.copy(), training=False), x)
    assert np.array_equal(layer.infer(x.copy()), x)


def test_inference_path_equals_training_forward_and_leaves_buffers_alone():
    layer = Dense(6, 3, rng=np.random.default_rng(3))
    x = RNG.standard_normal((5, 6)).astype(np.float32)
    trained = layer.forward(x, training=True).copy()
    other = layer.infer(RNG.standard_normal((2, 6)).astype(np.float32))
    assert other.shape == (2, 3)
    assert np.array_equal(layer.infer(x), trained)
    assert np.array_equal(layer._out, trained)  # infer did not touch the training buffer


def test_initialisations_have_the_documented_scale():
    he = Dense(1000, 500, init="he", rng=np.random.default_rng(0)).params["W"]
    glorot = Dense(1000, 500, init="glorot", rng=np.random.default_rng(0)).params["W"]
    assert he.dtype == np.float32
    assert abs(he.std() - np.sqrt(2 / 1000)) < 0.002
    assert abs(glorot.std() - np.sqrt(2 / 1500)) < 0.002


@pytest.mark.parametrize("cfg", [
    {"type": "dense", "in": 3, "out": 2, "init": "glorot"},
    {"type": "relu"}, {"type": "tanh"}, {"type": "sigmoid"},
    {"type": "leaky_relu", "slope": 0.2}, {"type": "dropout", "rate": 0.3},
])
def test_layer_config_round_trip(cfg):
    assert layer_from_config(cfg).config() == cfg


@pytest.mark.parametrize("bad", [
    {"type": "conv"}, {"type": "dense", "in": 0, "out": 2},
    {"type": "dropout", "rate": 1.0}, {"type": "leaky_relu", "slope": 2.0},
    {"type": "dense", "in": 3, "out": 2, "init": "zeros"},
])
def test_bad_layer_configs_are_rejected(bad):
    with pytest.raises(ValueError):
        layer_from_config(bad)
