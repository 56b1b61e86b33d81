"""The backprop engine. Imports numpy only (never Flask, Pillow or scikit-learn)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .mlp import MLP
from .network import Network
from .recurrent import RecurrentNetwork

__all__ = [
    "MLP", "NETWORKS", "NETWORK_KINDS", "Network", "RecurrentNetwork", "network_class",
    "network_from_config"]

#: Every network kind, by the name the artifact and ``ocr-train --model`` use.
NETWORKS: dict[str, type[Network]] = {cls.kind: cls for cls in (MLP, RecurrentNetwork)}
NETWORK_KINDS = tuple(NETWORKS)


def network_class(kind: object) -> type[Network]:
    """The class of a network kind; ValueError for an unknown one."""
    try:
        return NETWORKS[kind]  # type: ignore[index]
    except (KeyError, TypeError):
        expected = " or ".join(repr(name) for name in NETWORKS)
        raise ValueError(f"unknown network kind {kind!r} (expected {expected})") from None


def network_from_config(config: dict[str, Any], dtype: np.dtype | type = np.float32) -> Network:
    """Rebuild an untrained network of the right kind from its ``config()`` dictionary."""
    return network_class(config.get("kind")).from_config(config, dtype=dtype)
