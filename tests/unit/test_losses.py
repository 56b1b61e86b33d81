import numpy as np
import pytest

from ocr_service.nn.losses import SoftmaxCrossEntropy, softmax
from ocr_testing.gradcheck import numerical_grad, relative_error

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_gradient_matches_central_differences(smoothing):
    logits = RNG.standard_normal((5, 4)) * 3
    labels = np.array([0, 3, 1, 1, 2])
    loss = SoftmaxCrossEntropy(smoothing)
    loss.forward(logits, labels)
    analytic = loss.backward().copy()
    numeric = numerical_grad(lambda: loss.forward(logits, labels), logits)
    assert relative_error(analytic, numeric) < 1e-6


def test_cross_entropy_value_matches_the_definition():
    logits = np.array([[2.0, 1.0, 0.1], [0.0, 0.0, 5.0]])
    labels = np.array([0, 1])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = -np.log(p[[0, 1], labels]).mean()
    assert SoftmaxCrossEntropy().forward(logits, labels) == pytest.approx(expected, rel=1e-12)
    smoothed = 0.9 * expected + 0.1 * (-np.log(p).mean(axis=1)).mean()
    assert SoftmaxCrossEntropy(0.1).forward(logits, labels) == pytest.approx(smoothed, rel=1e-12)


def test_cross_entropy_is_stable_for_huge_logits_in_float32():
    logits = np.array([[1e4, -1e4, 0.0], [-5e3, 5e3, 5e3]], dtype=np.float32)
    loss = SoftmaxCrossEntropy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow is fine
        value = loss.forward(logits, np.array([0, 0]))
        grad = loss.backward()
    assert np.isfinite(value) and value == pytest.approx(5000.0 + np.log(2) / 2, rel=1e-4)
    assert np.all(np.isfinite(grad))
    assert grad.dtype == np.float32


def test_softmax_rows_sum_to_one_and_keep_order():
    z = RNG.standard_normal((6, 10)).astype(np.float32) * 50
    p = softmax(z)
    assert np.allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert np.array_equal(p.argmax(axis=1), z.argmax(axis=1))


def test_backward_before_forward_is_an_error():
    with pytest.raises(RuntimeError):
        SoftmaxCrossEntropy().backward()
