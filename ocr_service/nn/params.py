"""Helpers shared by every network kind for named parameter dictionaries."""

from __future__ import annotations

import numpy as np

__all__ = ["copy_params_into"]


def copy_params_into(own: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> None:
    """Copy ``state`` into the arrays of ``own`` in place; names and shapes must match.

    Raises ``ValueError`` naming the missing, unexpected or mis-shaped parameters.
    """
    if set(own) != set(state):
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        raise ValueError(f"parameter names differ: missing {missing}, unexpected {extra}")
    for name, arr in own.items():
        if arr.shape != state[name].shape:
            raise ValueError(f"{name}: expected shape {arr.shape}, got {state[name].shape}")
        arr[...] = state[name]
