"""Optimizers and learning-rate schedules.

Optimizers update parameters in place from ``(param, grad)`` array pairs; all state
(moments, velocity) is preallocated once and updated with ``out=`` so a step allocates
nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

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


class Optimizer:
    """Base class. ``weight_decay`` is L2 added to the gradient (SGD) or decoupled (AdamW)."""

    def __init__(self, pairs: ParamPairs, lr: float, weight_decay: float = 0.0) -> None:
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight decay must be >= 0, got {weight_decay}")
        self.pairs = list(pairs)
        self.lr = lr
        self.weight_decay = weight_decay
        self.steps = 0
        self._scratch = [np.empty_like(p) for p, _ in self.pairs]

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
        self.velocity = [np.zeros_like(p) for p, _ in self.pairs]

    def step(self) -> None:
        self.steps += 1
        lr, mu, wd = self.lr, self.momentum, self.weight_decay
        for (p, g), v, tmp in zip(self.pairs, self.velocity, self._scratch, strict=True):
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
    ) -> None:
        super().__init__(pairs, lr, weight_decay)
        self.beta1, self.beta2 = betas
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"Adam betas must be in [0, 1), got {betas}")
        self.eps, self.decoupled = eps, decoupled
        self.m = [np.zeros_like(p) for p, _ in self.pairs]
        self.v = [np.zeros_like(p) for p, _ in self.pairs]

    def step(self) -> None:
        self.steps += 1
        b1, b2, t = self.beta1, self.beta2, self.steps
        # Bias corrections folded into the step size and epsilon (as in the paper's
        # "efficient version"), which saves two full-array passes per parameter.
        step_size = self.lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        eps_hat = self.eps * math.sqrt(1 - b2**t)
        wd = self.weight_decay
        for (p, g), m, v, tmp in zip(self.pairs, self.m, self.v, self._scratch, strict=True):
            if self.decoupled:
                if wd:
                    p *= 1 - self.lr * wd
            else:
                _add_l2(g, p, wd, tmp)
            m *= b1
            np.multiply(g, 1 - b1, out=tmp)
            m += tmp
            v *= b2
            np.multiply(g, g, out=tmp)
            tmp *= 1 - b2
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
