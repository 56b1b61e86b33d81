"""The backprop engine. Imports numpy only (never Flask, Pillow or scikit-learn)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .mlp import MLP
from .recurrent import RecurrentNetwork

__all__ = ["MLP", "RecurrentNetwork", "network_from_config"]


def network_from_config(
    config: dict[str, Any], dtype: np.dtype | type = np.float32
) -> MLP | RecurrentNetwork:
    """Rebuild an untrained network of the right kind from its ``config()`` dictionary."""
    kind = config.get("kind")
    if kind == "mlp":
        return MLP.from_config(config, dtype=dtype)
    if kind == "rbp":
        return RecurrentNetwork.from_config(config, dtype=dtype)
    raise ValueError(f"unknown network kind {kind!r}")
