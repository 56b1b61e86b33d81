"""Compiled one-pass update kernels (numba), used by the optimizers when numba is installed.

numpy spends ten passes over the parameters on one Adam step, each a separate call that
streams whole arrays; on a wide network that is a large share of a training epoch.
Compiled, the step is one pass (figures: docs/benchmarks.md). The kernel does the
same float operations, in the same order and precision, as ``optim._adam_update``: no
fast-math and no fused multiply-add, so both paths give bit-identical weights.

numba is imported only when an optimizer asks for the kernel, so serving never loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np

__all__ = ["adam_kernel"]


def _adam_loop(p, g, m, v, b1, b2, step_size, eps_hat, decay, l2, tiny):
    # compiled by numba; the scalars have the arrays' dtype, so nothing widens to float64
    for i in range(p.size):
        pi = p[i]
        gi = g[i]
        if l2 != 0:
            gi = gi + pi * l2
            g[i] = gi
        if decay != 1:
            pi = pi * decay
        mi = m[i] * b1 + gi
        vi = v[i] * b2 + gi * gi
        p[i] = pi - mi / (np.sqrt(vi) + eps_hat) * step_size
        if tiny != 0:
            # see optim._flush_tiny: rounds moments far below any update's size to zero
            mi = (mi + tiny) - tiny
            vi = (vi + tiny) - tiny
        m[i] = mi
        v[i] = vi


@cache
def adam_kernel() -> Callable[..., None] | None:
    """The compiled Adam update, or None when numba is not installed (or its JIT is off).

    Call as ``kernel(p, g, m, v, b1, b2, step_size, eps_hat, decay, l2, tiny)`` with 1-D
    C-contiguous arrays of one float dtype and scalars of that dtype; it updates ``p``, ``m``
    and ``v`` in place (and ``g`` when ``l2`` is not 0), exactly as ``optim._adam_update``
    followed by ``optim._flush_tiny`` of both moments when ``tiny`` is not 0.
    """
    try:
        import numba
    except ImportError:
        return None
    if numba.config.DISABLE_JIT:  # a pure-Python loop over every parameter: far slower
        return None
    # error_model="numpy": no zero-division checks inside the loop, so it vectorises
    options = dict(error_model="numpy", nogil=True)
    try:
        return numba.njit(cache=True, **options)(_adam_loop)
    except RuntimeError:  # no writable cache location (a read-only install, no home)
        return numba.njit(**options)(_adam_loop)
