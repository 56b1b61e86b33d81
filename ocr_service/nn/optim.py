"""Optimizers and learning-rate schedules.

Optimizers update parameters in place from ``(param, grad)`` array pairs; all state
(moments, velocity) is preallocated once and updated with ``out=`` so a step allocates
nothing. When the parameters (and the gradients) are consecutive views of one buffer
(see ``pack_flat``), an optimizer updates that buffer as a single array: a step then costs
a dozen numpy calls whatever the number of layers, instead of a dozen per parameter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .kernels import adam_kernel

__all__ = [
    "SGD",
    "Adam",
    "ConstantLR",
    "CosineLR",
    "Optimizer",
    "StepLR",
    "clip_grad_norm",
    "make_optimizer",
    "make_schedule",
    "pack_flat",
]

ParamPairs = Sequence[tuple[np.ndarray, np.ndarray]]


def clip_grad_norm(grads: Sequence[np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so their joint L2 norm is at most ``max_norm``.

    Returns the norm before clipping.
    """
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
    if max_norm > 0 and total > max_norm:
        scale = max_norm / (total + 1e-12)
        for g in grads:
            g *= scale
    return total


def pack_flat(dicts: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    """Move every array of ``dicts`` (in order) into one new 1-D buffer and replace each
    entry by a view of it, so optimizers can update all of them in one pass.

    All arrays must share one dtype. Returns the buffer.
    """
    arrays = [a for d in dicts for a in d.values()]
    flat = np.empty(sum(a.size for a in arrays), dtype=arrays[0].dtype if arrays else np.float32)
    offset = 0
    for d in dicts:
        for name, array in d.items():
            view = flat[offset : offset + array.size].reshape(array.shape)
            view[...] = array
            d[name] = view
            offset += array.size
    return flat


def _flat_span(arrays: Sequence[np.ndarray]) -> np.ndarray | None:
    """The 1-D buffer that ``arrays`` tile exactly and in order, or None if there is none."""
    if not arrays:
        return None
    base = arrays[0].base
    if base is None or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    address = base.__array_interface__["data"][0]
    for array in arrays:
        if (array.base is not base or array.dtype != base.dtype
                or not array.flags.c_contiguous
                or array.__array_interface__["data"][0] != address):
            return None
        address += array.nbytes
    return base if address == base.__array_interface__["data"][0] + base.nbytes else None


def _update_groups(pairs: ParamPairs) -> list[tuple[np.ndarray, np.ndarray]]:
    """``pairs`` as 1-D ``(param, grad)`` arrays to update: one pair for a packed network."""
    flat_p, flat_g = _flat_span([p for p, _ in pairs]), _flat_span([g for _, g in pairs])
    if flat_p is not None and flat_g is not None and flat_p.shape == flat_g.shape:
        return [(flat_p, flat_g)]
    for p, g in pairs:
        if not (p.flags.c_contiguous and g.flags.c_contiguous) or p.shape != g.shape:
            raise ValueError("parameters and gradients must be C-contiguous and of equal shape")
    return [(p.reshape(-1), g.reshape(-1)) for p, g in pairs]


class Optimizer:
    """Base class. ``weight_decay`` is L2 added to the gradient (SGD) or decoupled (AdamW)."""

    def __init__(self, pairs: ParamPairs, lr: float, weight_decay: float = 0.0) -> None:
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight decay must be >= 0, got {weight_decay}")
        self.pairs = list(pairs)
        self.groups = _update_groups(self.pairs)
        self.lr = lr
        self.weight_decay = weight_decay
        self.steps = 0

    def step(self) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum: ``v = mu v - lr g``; ``p += v`` (or
    ``p += mu v - lr g`` for Nesterov, the form used by PyTorch and Sutskever et al.)."""

    def __init__(
        self,
        pairs: ParamPairs,
        lr: float = 0.01,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(pairs, lr, weight_decay)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov = momentum, nesterov
        self.velocity = [np.zeros_like(p) for p, _ in self.groups]
        self._scratch = [np.empty_like(p) for p, _ in self.groups]

    def step(self) -> None:
        self.steps += 1
        lr, mu, wd = self.lr, self.momentum, self.weight_decay
        for (p, g), v, tmp in zip(self.groups, self.velocity, self._scratch, strict=True):
            _add_l2(g, p, wd, tmp)
            update = g
            if mu:
                v *= mu
                v += g  # momentum buffer of gradients (the PyTorch convention)
                if self.nesterov:
                    np.multiply(v, mu, out=tmp)
                    tmp += g
                update = tmp if self.nesterov else v
            np.multiply(update, lr, out=tmp)
            p -= tmp


def _add_l2(grad: np.ndarray, param: np.ndarray, wd: float, tmp: np.ndarray) -> None:
    """``grad += wd * param`` in place (gradients are rewritten by every backward pass)."""
    if wd:
        np.multiply(param, wd, out=tmp)
        grad += tmp


#: Parameters from which Adam uses the compiled kernel by default. Importing numba and
#: loading the cached kernel takes longer than a whole short run on a small network spends
#: in numpy's updates (the 64-128-10 digits network of ``ocr-train --dataset digits``).
COMPILED_MIN_PARAMS = 100_000


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``decoupled=True`` makes it AdamW
    (Loshchilov & Hutter): ``p -= lr * wd * p`` separately from the adaptive step."""

    def __init__(
        self,
        pairs: ParamPairs,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = True,
        compiled: bool | None = None,
    ) -> None:
        """``compiled``: use the one-pass numba kernel (None: when numba is installed and
        there are at least ``COMPILED_MIN_PARAMS`` parameters). Both paths give
        bit-identical results; the compiled one is faster (docs/benchmarks.md)."""
        super().__init__(pairs, lr, weight_decay)
        self.beta1, self.beta2 = betas
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"Adam betas must be in [0, 1), got {betas}")
        self.eps, self.decoupled = eps, decoupled
        self._flush_every = _flush_interval(min(self.beta1, self.beta2))
        # Moments are kept as m / (1 - b1) and v / (1 - b2): each update is then one
        # multiply-add (``m = b1 m + g``) and the constants move into the step size.
        self.m = [np.zeros_like(p) for p, _ in self.groups]
        self.v = [np.zeros_like(p) for p, _ in self.groups]
        wanted = compiled if compiled is not None else (
            sum(p.size for p, _ in self.groups) >= COMPILED_MIN_PARAMS)
        self._kernel = adam_kernel() if wanted else None
        if compiled and self._kernel is None:
            raise RuntimeError("compiled=True needs numba (pip install numba)")
        self._chunks = [] if self._kernel is not None else self._cache_blocks()

    def _cache_blocks(self) -> list[tuple[np.ndarray, ...]]:
        """(param, grad, m, v, scratch) views per cache block for the numpy path, sliced once
        rather than every step; one block of scratch per group, reused block after block,
        stays in cache."""
        chunks = []
        for (p, g), m, v in zip(self.groups, self.m, self.v, strict=True):
            scratch = np.empty(min(p.size, BLOCK), p.dtype)
            chunks += [(p[b], g[b], m[b], v[b], scratch[: b.stop - b.start])
                       for b in _blocks(p.size)]
        return chunks

    def step(self) -> None:
        self.steps += 1
        b1, b2, t = self.beta1, self.beta2, self.steps
        # p -= lr * m_hat / (sqrt(v_hat) + eps) with m_hat = (1-b1) m / (1-b1^t) and
        # v_hat = (1-b2) v / (1-b2^t), rewritten as step_size * m / (sqrt(v) + eps_hat).
        v_scale = math.sqrt((1 - b2) / (1 - b2**t))
        step_size = self.lr * (1 - b1) / (1 - b1**t) / v_scale
        eps_hat = self.eps / v_scale
        wd = self.weight_decay
        decay, l2 = (1 - self.lr * wd, 0.0) if self.decoupled else (1.0, wd)
        flush = t % self._flush_every == 0
        if self._kernel is not None:
            for (p, g), m, v in zip(self.groups, self.m, self.v, strict=True):
                f = p.dtype.type
                self._kernel(p, g, m, v, f(b1), f(b2), f(step_size), f(eps_hat), f(decay),
                             f(l2), f(TINY if flush else 0.0))
            return
        for p, g, m, v, tmp in self._chunks:
            _adam_update(p, g, m, v, tmp, b1, b2, step_size, eps_hat, decay, l2)
            if flush:
                _flush_tiny(m)
                _flush_tiny(v)


#: elements per block of an elementwise update: five float32 blocks fit in L2 cache, and
#: blocks this large keep numpy's per-call overhead small (figures: docs/benchmarks.md)
BLOCK = 1 << 16


def _blocks(size: int) -> list[slice]:
    """Cache-sized slices covering ``range(size)``: the passes of an update then run over
    data in cache instead of streaming whole arrays through memory ten times."""
    return [slice(start, min(start + BLOCK, size)) for start in range(0, size, BLOCK)]


#: A moment whose gradient stays zero (a dead unit, a blank input pixel) decays
#: geometrically into float32's denormal range, where every multiply or divide takes a slow
#: microcode path, several times slower (docs/benchmarks.md). Flushing moments below
#: about TINY * 2**-24 to zero (nothing near an update's size) every few steps keeps them
#: all normal: the smallest survivor, TINY * 2**-23, needs a
#: decay by 2**-43 to become denormal.
TINY = 2.0**-60
MAX_FLUSH_EVERY = 64


def _flush_interval(beta: float) -> int:
    """Steps between flushes for moments decaying by ``beta`` per step: half the steps from
    the smallest survivor to the denormal range (at most ``MAX_FLUSH_EVERY``)."""
    if beta == 0:
        return MAX_FLUSH_EVERY
    return max(1, min(MAX_FLUSH_EVERY, int(43 * math.log(2) / -math.log(beta) / 2)))


def _flush_tiny(a: np.ndarray) -> None:
    """Set entries much smaller than ``TINY`` to zero, in place: adding and subtracting TINY
    rounds them away and leaves every float32 entry above ``TINY * 2**24`` bit-identical."""
    a += TINY
    a -= TINY


def _adam_update(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, tmp: np.ndarray,
                 b1: float, b2: float, step_size: float, eps_hat: float, decay: float,
                 l2: float) -> None:
    """In place: ``g += l2 p``; ``p *= decay``; ``m = b1 m + g``; ``v = b2 v + g²``;
    ``p -= step_size * m / (sqrt(v) + eps_hat)``."""
    _add_l2(g, p, l2, tmp)
    if decay != 1.0:
        p *= decay
    m *= b1
    m += g
    v *= b2
    np.multiply(g, g, out=tmp)
    v += tmp
    np.sqrt(v, out=tmp)
    tmp += eps_hat
    np.divide(m, tmp, out=tmp)
    tmp *= step_size
    p -= tmp


def make_optimizer(
    name: str, pairs: ParamPairs, lr: float, weight_decay: float = 0.0
) -> Optimizer:
    """``adam`` (AdamW when ``weight_decay`` > 0), ``sgd`` (Nesterov momentum 0.9)."""
    if name == "adam":
        return Adam(pairs, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return SGD(pairs, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r} (expected 'adam' or 'sgd')")


class ConstantLR:
    """The base learning rate at every step."""

    def __init__(self, base_lr: float) -> None:
        self.base_lr = base_lr

    def __call__(self, step: int) -> float:
        return self.base_lr


class StepLR:
    """Multiply the rate by ``gamma`` every ``step_size`` steps."""

    def __init__(self, base_lr: float, step_size: int, gamma: float = 0.1) -> None:
        if step_size <= 0:
            raise ValueError("step_size must be positive")
        self.base_lr, self.step_size, self.gamma = base_lr, step_size, gamma

    def __call__(self, step: int) -> float:
        return self.base_lr * self.gamma ** (step // self.step_size)


class CosineLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_lr`` at ``total``."""

    def __init__(self, base_lr: float, total: int, warmup: int = 0, min_lr: float = 0.0) -> None:
        if total <= 0 or warmup < 0 or warmup >= total:
            raise ValueError(f"need 0 <= warmup < total, got warmup={warmup}, total={total}")
        self.base_lr, self.total, self.warmup, self.min_lr = base_lr, total, warmup, min_lr

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / (self.total - self.warmup))
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress))


def make_schedule(name: str, base_lr: float, total_steps: int, warmup_steps: int = 0):
    """``constant``, ``step`` (x0.1 after each third of training) or ``cosine``."""
    if name == "constant":
        return ConstantLR(base_lr)
    if name == "step":
        return StepLR(base_lr, step_size=max(1, total_steps // 3), gamma=0.1)
    if name == "cosine":
        return CosineLR(base_lr, total=max(total_steps, warmup_steps + 1), warmup=warmup_steps)
    raise ValueError(f"unknown schedule {name!r} (expected constant, step or cosine)")
