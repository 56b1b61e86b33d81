"""The static backprop network: a multilayer perceptron built from ``layers``."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from .layers import ACTIVATIONS, Dense, Dropout, Layer, layer_from_config
from .losses import softmax
from .optim import pack_flat
from .params import copy_params_into

__all__ = ["MLP"]


class MLP:
    """Feed-forward network ``x (N, D) -> logits (N, C)``.

    ``forward``/``backward`` are the training path (cached buffers, one thread);
    ``predict_proba`` is the stateless inference path that serving threads share.
    """

    kind = "mlp"
    DEFAULT_HIDDEN = (256, 128)
    BATCH_INDEPENDENT = True

    def __init__(self, layers: Sequence[Layer]) -> None:
        dense = [layer for layer in layers if isinstance(layer, Dense)]
        if not dense:
            raise ValueError("an MLP needs at least one dense layer")
        for a, b in itertools.pairwise(dense):
            if a.n_out != b.n_in:
                raise ValueError(f"dense layer sizes do not chain: {a.n_out} -> {b.n_in}")
        self.layers = list(layers)
        # one buffer for all weights and one for all gradients: the optimizer then updates
        # the whole network with a dozen numpy calls per step, whatever the depth
        pack_flat([layer.params for layer in self.layers])
        pack_flat([layer.grads for layer in self.layers])
        self.n_inputs = dense[0].n_in
        self.n_classes = dense[-1].n_out

    @classmethod
    def build(
        cls,
        n_inputs: int,
        n_classes: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        activation: str = "relu",
        dropout: float = 0.0,
        seed: int = 0,
        dtype: np.dtype | type = np.float32,
    ) -> MLP:
        """Dense -> activation (-> dropout) per hidden size, then a dense readout.

        ReLU-family layers get He initialisation, tanh/sigmoid Glorot.
        """
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r} (expected one of {sorted(ACTIVATIONS)})"
            )
        rng = np.random.default_rng(seed)
        init = "he" if activation in ("relu", "leaky_relu") else "glorot"
        layers: list[Layer] = []
        width = n_inputs
        for size in hidden:
            layers.append(Dense(width, int(size), init=init, rng=rng, dtype=dtype))
            layers.append(ACTIVATIONS[activation]())
            if dropout:
                layers.append(Dropout(dropout, rng=rng))
            width = int(size)
        layers.append(Dense(width, n_classes, init="glorot", rng=rng, dtype=dtype))
        return cls(layers)

    @classmethod
    def from_config(
        cls, config: dict[str, Any], dtype: np.dtype | type = np.float32, seed: int = 0
    ) -> MLP:
        rng = np.random.default_rng(seed)
        return cls([layer_from_config(c, rng=rng, dtype=dtype) for c in config["layers"]])

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "layers": [layer.config() for layer in self.layers]}

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, grad: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate ``dL/dlogits (N, C)``; fills every layer's grads, returns dL/dx.

        ``input_grad=False`` (training, which never uses dL/dx) skips the first layer's
        input-gradient matmul and returns None.
        """
        for layer in reversed(self.layers[1:]):
            grad = layer.backward(grad)
        return self.layers[0].backward(grad, input_grad=input_grad)

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        for layer in self.layers:
            x = layer.infer(x)
        return x

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, C)`` for inputs ``(N, D)``; thread-safe."""
        logits = self.predict_logits(x)
        return softmax(logits, out=logits)

    def predict_proba_with_stats(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """``predict_proba`` plus per-call statistics (none for an MLP)."""
        return self.predict_proba(x), {}

    @property
    def dtype(self) -> np.dtype:
        return self.layers[0].params["W"].dtype if self.layers[0].params else np.dtype(
            np.float32
        )

    def _named(self, attr: str) -> dict[str, np.ndarray]:
        return {
            f"layer{i}.{name}": arr
            for i, layer in enumerate(self.layers)
            for name, arr in getattr(layer, attr).items()
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters by name (``layer{i}.W``); the arrays themselves, not copies."""
        return self._named("params")

    def grads_dict(self) -> dict[str, np.ndarray]:
        return self._named("grads")

    def param_pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        params, grads = self.state_dict(), self.grads_dict()
        return [(params[k], grads[k]) for k in params]

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy weights in place; names and shapes must match exactly."""
        copy_params_into(self.state_dict(), state)

    def training_stats(self) -> dict[str, float]:
        """Per-step statistics worth recording in the history (none for an MLP)."""
        return {}
