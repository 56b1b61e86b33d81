"""What every network kind offers the training loop, the artifact store and the predictor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

__all__ = ["Network"]


class Network(Protocol):
    """A network ``x (N, D) -> class scores (N, C)``, built, trained, saved and served.

    ``forward``/``backward`` are the training path (cached buffers, one thread);
    ``predict_proba`` and ``predict_proba_with_stats`` the stateless inference path that
    serving threads share. ``config()`` and ``state_dict()`` are what the artifact stores;
    ``from_config`` and ``load_state_dict`` rebuild the network from them.
    """

    #: the artifact's ``kind`` and ``ocr-train --model``
    kind: ClassVar[str]
    #: hidden sizes ``build`` uses when none are given
    DEFAULT_HIDDEN: ClassVar[tuple[int, ...]]
    #: whether a sample's answer is independent of the rest of its batch (so the predictor
    #: may classify the characters of many uploads in one call)
    BATCH_INDEPENDENT: ClassVar[bool]
    n_inputs: int
    n_classes: int

    @classmethod
    def build(cls, n_inputs: int, n_classes: int, hidden: Sequence[int] = ...,
              activation: str = ..., dropout: float = ..., seed: int = ...,
              dtype: np.dtype | type = ..., **options: Any) -> Network: ...

    @classmethod
    def from_config(cls, config: dict[str, Any], dtype: np.dtype | type = ...,
                    seed: int = ...) -> Network: ...

    def config(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, np.ndarray]: ...

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None: ...

    def param_pairs(self) -> list[tuple[np.ndarray, np.ndarray]]: ...

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray: ...

    def backward(self, grad: np.ndarray, input_grad: bool = True) -> np.ndarray | None: ...

    def training_stats(self) -> dict[str, float]: ...

    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...

    def predict_proba_with_stats(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, float]]: ...
