"""Layers of the static backprop engine.

Every layer maps a batch ``x`` of shape ``(N, D_in)`` to ``(N, D_out)``; ``backward``
takes ``dL/d out`` of shape ``(N, D_out)`` and returns ``dL/d x`` of shape ``(N, D_in)``,
filling ``grads`` for layers that have parameters. ``backward(..., input_grad=False)`` tells a
layer that ``dL/d x`` is not needed (the network's input): Dense then skips its largest
matmul and returns None.

Buffers are cached per batch shape and reused, so a training step allocates nothing
large (glibc would otherwise mmap/munmap every >= 1 MB temporary each step).
Activations work in place on the previous layer's output buffer and compute their
derivative from their own output, so they keep no extra copy of the input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "ACTIVATIONS",
    "Dense",
    "Dropout",
    "Layer",
    "LeakyReLU",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "layer_from_config",
]


class Layer:
    """Base class: a differentiable map over a mini-batch."""

    params: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]

    def __init__(self) -> None:
        self.params = {}
        self.grads = {}

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        raise NotImplementedError

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Stateless inference (safe to call from several threads); may overwrite ``x``,
        which the caller owns."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        raise NotImplementedError


class Dense(Layer):
    """Affine layer ``y = x @ W + b`` with ``W`` of shape ``(D_in, D_out)``."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        *,
        init: str = "he",
        rng: np.random.Generator | None = None,
        dtype: np.dtype | type = np.float32,
    ) -> None:
        super().__init__()
        if n_in <= 0 or n_out <= 0:
            raise ValueError(f"Dense sizes must be positive, got {n_in}x{n_out}")
        rng = rng if rng is not None else np.random.default_rng(0)
        if init == "he":
            scale = np.sqrt(2.0 / n_in)
            weights = rng.standard_normal((n_in, n_out)) * scale
        elif init == "glorot":
            limit = np.sqrt(6.0 / (n_in + n_out))
            weights = rng.uniform(-limit, limit, (n_in, n_out))
        else:
            raise ValueError(f"unknown initialisation {init!r} (expected 'he' or 'glorot')")
        self.n_in, self.n_out, self.init = n_in, n_out, init
        self.params = {
            "W": np.ascontiguousarray(weights, dtype=dtype),
            "b": np.zeros(n_out, dtype=dtype),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._x: np.ndarray | None = None
        self._out: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        W, b = self.params["W"], self.params["b"]
        n = x.shape[0]
        if self._out is None or self._out.shape[0] != n or self._out.dtype != W.dtype:
            self._out = np.empty((n, self.n_out), dtype=W.dtype)
        np.matmul(x, W, out=self._out)
        self._out += b
        self._x = x
        return self._out

    def infer(self, x: np.ndarray) -> np.ndarray:
        out = x @ self.params["W"]
        out += self.params["b"]
        return out

    def backward(self, grad: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        if self._x is None:
            raise RuntimeError("Dense.backward called before forward")
        W = self.params["W"]
        np.matmul(self._x.T, grad, out=self.grads["W"])
        np.add.reduce(grad, axis=0, out=self.grads["b"])
        if not input_grad:
            return None
        n = grad.shape[0]
        if self._dx is None or self._dx.shape[0] != n or self._dx.dtype != W.dtype:
            self._dx = np.empty((n, self.n_in), dtype=W.dtype)
        np.matmul(grad, W.T, out=self._dx)
        return self._dx

    def config(self) -> dict[str, Any]:
        return {"type": "dense", "in": self.n_in, "out": self.n_out, "init": self.init}


class _Activation(Layer):
    """Elementwise activation applied in place; derivative taken from the output."""

    name = ""

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None
        self._scratch: np.ndarray | None = None

    def _buffer(self, like: np.ndarray) -> np.ndarray:
        if self._scratch is None or self._scratch.shape != like.shape or (
            self._scratch.dtype != like.dtype
        ):
            self._scratch = np.empty_like(like)
        return self._scratch

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._y = self._apply(x)
        return self._y

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self._apply(x)

    def backward(self, grad: np.ndarray, input_grad: bool = True) -> np.ndarray:
        if self._y is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        self._scale_grad(grad, self._y)
        return grad

    def _apply(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _scale_grad(self, grad: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {"type": self.name}


class ReLU(_Activation):
    name = "relu"

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0, out=x)

    def _scale_grad(self, grad: np.ndarray, y: np.ndarray) -> None:
        mask = self._buffer(y)
        np.greater(y, 0, out=mask)
        grad *= mask


class LeakyReLU(_Activation):
    name = "leaky_relu"

    def __init__(self, slope: float = 0.01) -> None:
        super().__init__()
        if not 0.0 < slope < 1.0:
            raise ValueError(f"leaky_relu slope must be in (0, 1), got {slope}")
        self.slope = slope

    def _apply(self, x: np.ndarray) -> np.ndarray:
        # max(x, slope*x) is x for x > 0 and slope*x otherwise (0 < slope < 1).
        return np.maximum(x, self.slope * x, out=x)

    def _scale_grad(self, grad: np.ndarray, y: np.ndarray) -> None:
        factor = self._buffer(y)
        np.greater(y, 0, out=factor)
        factor *= 1.0 - self.slope
        factor += self.slope
        grad *= factor

    def config(self) -> dict[str, Any]:
        return {"type": self.name, "slope": self.slope}


class Tanh(_Activation):
    name = "tanh"

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(x, out=x)

    def _scale_grad(self, grad: np.ndarray, y: np.ndarray) -> None:
        deriv = self._buffer(y)
        np.multiply(y, y, out=deriv)
        np.subtract(1, deriv, out=deriv)
        grad *= deriv


class Sigmoid(_Activation):
    name = "sigmoid"

    def _apply(self, x: np.ndarray) -> np.ndarray:
        # 0.5 * (1 + tanh(x/2)) is the logistic function without overflow in exp.
        x *= 0.5
        np.tanh(x, out=x)
        x += 1
        x *= 0.5
        return x

    def _scale_grad(self, grad: np.ndarray, y: np.ndarray) -> None:
        deriv = self._buffer(y)
        np.subtract(1, y, out=deriv)
        deriv *= y
        grad *= deriv


ACTIVATIONS: dict[str, type[_Activation]] = {
    cls.name: cls for cls in (ReLU, LeakyReLU, Tanh, Sigmoid)
}


class Dropout(Layer):
    """Inverted dropout: zeroes a fraction ``rate`` of units and scales the rest by
    ``1/(1-rate)`` while training, so inference is the identity."""

    def __init__(self, rate: float, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.mask: np.ndarray | None = None
        self.fixed_mask = False  # tests set a mask and this flag to check gradients

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if not training or self.rate == 0.0:
            self.mask = None
            return x
        if not self.fixed_mask:
            if self.mask is None or self.mask.shape != x.shape or self.mask.dtype != x.dtype:
                self.mask = np.empty_like(x)
            self.rng.random(out=self.mask, dtype=self.mask.dtype)
            keep = 1.0 - self.rate
            # mask = (u < keep) / keep, computed in place
            np.less(self.mask, keep, out=self.mask)
            self.mask *= 1.0 / keep
        x *= self.mask
        return x

    def infer(self, x: np.ndarray) -> np.ndarray:
        return x

    def backward(self, grad: np.ndarray, input_grad: bool = True) -> np.ndarray:
        if self.mask is not None:
            grad *= self.mask
        return grad

    def config(self) -> dict[str, Any]:
        return {"type": "dropout", "rate": self.rate}


def layer_from_config(
    cfg: dict[str, Any],
    *,
    rng: np.random.Generator | None = None,
    dtype: np.dtype | type = np.float32,
) -> Layer:
    """Rebuild one layer from its ``config()`` dictionary (parameters are freshly initialised)."""
    kind = cfg.get("type")
    if kind == "dense":
        return Dense(int(cfg["in"]), int(cfg["out"]), init=cfg.get("init", "he"), rng=rng,
                     dtype=dtype)
    if kind == "dropout":
        return Dropout(float(cfg["rate"]), rng=rng)
    if kind == "leaky_relu":
        return LeakyReLU(float(cfg.get("slope", 0.01)))
    if kind in ACTIVATIONS:
        return ACTIVATIONS[kind]()
    raise ValueError(f"unknown layer type {kind!r}")
