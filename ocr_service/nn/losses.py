"""Softmax cross-entropy, fused with the softmax for numerical stability."""

from __future__ import annotations

import numpy as np

__all__ = ["SoftmaxCrossEntropy", "softmax"]


def softmax(logits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` logits; shifting by the row max avoids overflow."""
    out = np.subtract(logits, np.maximum.reduce(logits, axis=1, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= np.add.reduce(out, axis=1, keepdims=True)
    return out


class SoftmaxCrossEntropy:
    """Mean cross-entropy of integer labels under ``softmax(logits)``.

    ``forward(logits (N, C), labels (N,) int)`` returns the mean loss (float);
    ``backward()`` returns ``dL/dlogits = (p - onehot(y) smoothed) / N`` of shape ``(N, C)``.
    ``label_smoothing`` spreads that much target mass uniformly over all classes.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self.probs: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._grad: np.ndarray | None = None
        self._row: np.ndarray | None = None  # (N, 1): row maxima, then row sums
        self._by_class: np.ndarray | None = None  # (C, N): the logits transposed
        self._rows = np.arange(0)

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> float:
        n, c = logits.shape
        if self.probs is None or self.probs.shape != logits.shape or (
            self.probs.dtype != logits.dtype
        ):
            self.probs = np.empty_like(logits)
            self._grad = np.empty_like(logits)
            self._row = np.empty((n, 1), dtype=logits.dtype)
            self._by_class = np.empty((c, n), dtype=logits.dtype)
            self._rows = np.arange(n)
        probs, row = self.probs, self._row
        # log-softmax via the log-sum-exp trick: log p = z - max - log(sum exp(z - max));
        # the row maxima are taken over the transposed logits, where numpy reduces whole
        # rows of N at once instead of N short rows of C (faster for few classes)
        np.copyto(self._by_class, logits.T)
        np.maximum.reduce(self._by_class, axis=0, out=row.reshape(n))
        np.subtract(logits, row, out=probs)
        picked = np.add.reduce(probs[self._rows, labels], dtype=np.float64)
        eps = self.label_smoothing
        mean_shifted = np.add.reduce(probs, axis=None, dtype=np.float64) / c if eps else 0.0
        np.exp(probs, out=probs)
        np.add.reduce(probs, axis=1, keepdims=True, out=row)
        probs /= row
        log_z = np.add.reduce(np.log(row, out=row), axis=None, dtype=np.float64)
        self._labels = labels
        # smoothed target: (1 - eps) on the label, eps spread uniformly over the C classes;
        # summed over the batch: sum(log_z) - (1 - eps) sum(picked) - eps sum(mean_shifted)
        return float(log_z - (1 - eps) * picked - eps * mean_shifted) / n

    def backward(self) -> np.ndarray:
        if self.probs is None or self._labels is None or self._grad is None:
            raise RuntimeError("SoftmaxCrossEntropy.backward called before forward")
        n, c = self.probs.shape
        grad = self._grad
        eps = self.label_smoothing
        np.subtract(self.probs, eps / c, out=grad)
        grad[self._rows, self._labels] -= 1.0 - eps
        grad *= 1.0 / n
        return grad
