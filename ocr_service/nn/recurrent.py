"""The recurrent backprop network (Almeida 1987, Pineda 1987): a fixed-point classifier.

For inputs ``x (N, D)`` the hidden state ``h* (N, H)`` is the fixed point of

    h = f(h W + x U + b)

found by relaxation (damped fixed-point iteration, vectorised over the batch); the
logits are ``h* R + c``. Training backpropagates through the equilibrium, not through
the iterations: the adjoint ``z`` solves ``z = ((z ⊙ f'(u*)) Wᵀ) + dL/dh*`` by the same
relaxation, and with ``δ = f'(u*) ⊙ z`` the gradients are ``dL/dW = h*ᵀ δ``,
``dL/dU = xᵀ δ``, ``dL/db = Σ δ``. Memory is a handful of ``(N, H)`` buffers whatever
the number of iterations.

Contraction. ``f`` is 1-Lipschitz for every supported activation, so ``h -> f(h W + ...)``
contracts when the spectral norm ``‖W‖₂ < 1``; then the fixed point exists, is unique and
both relaxations converge geometrically. The recurrent weight is reparametrised as
``W = s·V`` with ``s = min(1, γ / σ̂(V))`` (``γ = spectral_bound``) and ``σ̂(V) = ‖Vᵀu‖₂``,
where the unit vector ``u`` estimates the top left singular vector of ``V``: the stored
``sn_u`` refined by ``spectral_steps`` Lanczos steps (a Krylov-accelerated power iteration)
on the current ``V`` whenever the map is built. Training forward passes keep the refined
vector, so the estimate is carried across steps; inference refines a copy, so it uses the
scale the next training step would and any ``V`` gives a contractive map, also right after
the optimiser's last step. The gradient flows through the normalisation with ``u`` held
constant (as in spectral normalisation), ``dσ̂/dV = u vᵀ`` with ``v = Vᵀu/σ̂``: exact for
the function evaluated, and the derivative of ``σ(V)`` itself once ``u`` has converged.
``σ̂`` is a lower bound of ``σ(V)``, tight to ~1e-4 relative in practice; ``γ < 1`` leaves
the margin and the iteration cap below catches the rest.

Non-convergence within ``max_iter`` raises :class:`FixedPointError` on every path: with a
contractive map it only happens when ``max_iter``/``tol`` are mis-set (e.g. a tolerance
below the float precision), which should fail loudly rather than yield a wrong gradient
or answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .layers import ACTIVATIONS, Dropout
from .losses import softmax
from .params import copy_params_into

__all__ = ["FixedPointError", "RecurrentNetwork", "relax", "top_left_singular_vector"]

#: residual denominators are floored here so an all-zero state counts as converged
_TINY = 1e-30


class FixedPointError(RuntimeError):
    """A relaxation did not reach its tolerance within the iteration cap."""

    def __init__(self, which: str, iterations: int, residual: float, tol: float) -> None:
        super().__init__(
            f"{which} relaxation did not converge in {iterations} iterations "
            f"(relative residual {residual:.3g} > tol {tol:.3g}); raise max_iter, "
            f"loosen tol (float32 cannot go much below 1e-6) or lower spectral_bound"
        )
        self.which, self.iterations, self.residual, self.tol = which, iterations, residual, tol


def relax(
    apply: Callable[[np.ndarray, np.ndarray], None],
    buffers: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    damping: float,
    tol: float,
    max_iter: int,
    which: str,
    residuals: list[float] | None = None,
) -> tuple[np.ndarray, int]:
    """Find the fixed point of ``T`` by ``s <- s + damping·(T(s) - s)`` from ``s = 0``.

    ``apply(s, out)`` writes ``T(s)`` into ``out``; ``buffers`` are three scratch arrays
    of the state's shape (two iterates and a difference). Stops at the first ``k`` with
    ``max_n ‖T(s_k) - s_k‖ / ‖T(s_k)‖ <= tol`` (rows are samples) and returns
    ``(T(s_k), k)``; ``residuals`` (if given) receives that batch-maximum per iteration.
    """
    cur, nxt, diff = buffers
    cur.fill(0)
    residual = np.inf
    for k in range(1, max_iter + 1):
        apply(cur, nxt)
        np.subtract(nxt, cur, out=diff)
        num = np.einsum("ij,ij->i", diff, diff)
        den = np.einsum("ij,ij->i", nxt, nxt)
        residual = float(np.sqrt(np.max(num / np.maximum(den, _TINY), initial=0.0)))
        if residuals is not None:
            residuals.append(residual)
        if residual <= tol:
            return nxt, k
        if not np.isfinite(residual):
            break
        if damping != 1.0:
            diff *= damping
            np.add(cur, diff, out=nxt)
        cur, nxt = nxt, cur
    raise FixedPointError(which, max_iter, residual, tol)


def top_left_singular_vector(V: np.ndarray, start: np.ndarray, steps: int) -> np.ndarray:
    """Ritz estimate of the top left singular vector of ``V`` (H, H): ``steps`` Lanczos steps
    on ``V Vᵀ`` from ``start`` (H,), fully reorthogonalised; ``steps = 0`` returns ``start``.

    Lanczos rather than plain power iteration because training drives the top singular
    values of ``V`` together, where power iteration needs hundreds of steps to tell them
    apart and a Krylov space of ~10 vectors finds the largest to 1e-4.
    """
    k = min(int(steps), V.shape[0])
    if k == 0:
        return start.copy()
    basis = np.empty((V.shape[0], k), dtype=V.dtype)
    alpha, beta = np.zeros(k), np.zeros(k)
    q, m = _unit(start), 0
    for j in range(k):
        basis[:, j], m = q, j + 1
        w = V @ (V.T @ q)
        alpha[j] = float(q @ w)
        for _ in range(2):  # twice is enough to keep the basis orthogonal in floating point
            w -= basis[:, :m] @ (basis[:, :m].T @ w)
        beta[j] = float(np.linalg.norm(w))
        if beta[j] <= 1e3 * np.finfo(V.dtype).eps * max(float(np.abs(alpha[:m]).max()), 1e-30):
            break  # the Krylov space is invariant: its Ritz vector is exact
        q = w / beta[j]
    tri = np.diag(alpha[:m]) + np.diag(beta[: m - 1], 1) + np.diag(beta[: m - 1], -1)
    ritz = np.linalg.eigh(tri)[1][:, -1]
    return _unit(basis[:, :m] @ ritz.astype(V.dtype))


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


class RecurrentNetwork:
    """Fixed-point network ``x (N, D) -> logits (N, C)`` trained by recurrent backprop.

    Parameters: ``W`` (H, H) recurrent (stored unnormalised; the map uses ``s·W``, see the
    module docstring), ``U`` (D, H) input, ``b`` (H,), readout ``R`` (H, C) and ``c`` (C,).
    ``forward``/``backward`` are the training path (cached buffers, one thread);
    ``predict_proba`` is stateless and thread-safe. Dropout, if any, acts on ``h*`` before
    the readout.
    """

    kind = "rbp"
    DEFAULT_HIDDEN = (256,)
    #: a batch relaxes until its slowest sample converges: answers depend on the batch
    BATCH_INDEPENDENT = False

    def __init__(
        self,
        n_inputs: int,
        n_classes: int,
        hidden: int = 256,
        activation: str = "relu",
        *,
        dropout: float = 0.0,
        max_iter: int = 100,
        tol: float = 1e-4,
        damping: float = 1.0,
        spectral_bound: float = 0.8,
        spectral_steps: int = 10,
        seed: int = 0,
        dtype: np.dtype | type = np.float32,
    ) -> None:
        if min(n_inputs, n_classes, hidden) <= 0:
            raise ValueError(f"sizes must be positive, got {n_inputs}, {hidden}, {n_classes}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r} (expected one of {sorted(ACTIVATIONS)})"
            )
        if not 0.0 < spectral_bound < 1.0:
            raise ValueError(f"spectral_bound must be in (0, 1), got {spectral_bound}")
        if not 0.0 < damping <= 1.0:
            raise ValueError(f"damping must be in (0, 1], got {damping}")
        if tol <= 0 or max_iter < 1 or spectral_steps < 0:
            raise ValueError("need tol > 0, max_iter >= 1 and spectral_steps >= 0")
        self.n_inputs, self.n_classes, self.hidden = int(n_inputs), int(n_classes), int(hidden)
        self.activation, self.dropout = activation, float(dropout)
        self.max_iter, self.tol, self.damping = int(max_iter), float(tol), float(damping)
        self.spectral_bound, self.spectral_steps = float(spectral_bound), int(spectral_steps)
        rng = np.random.default_rng(seed)
        d, h, c = self.n_inputs, self.hidden, self.n_classes
        in_scale = np.sqrt(2.0 / d) if activation in ("relu", "leaky_relu") else np.sqrt(1.0 / d)
        # A random H x H Gaussian with entry std a/sqrt(H) has spectral norm about 2a, so the
        # recurrence starts at ‖W‖₂ ≈ 0.5: well inside the bound, yet not negligible.
        self.params: dict[str, np.ndarray] = {
            "W": (rng.standard_normal((h, h)) * (0.25 / np.sqrt(h))).astype(dtype),
            "U": (rng.standard_normal((d, h)) * in_scale).astype(dtype),
            "b": np.zeros(h, dtype=dtype),
            "R": (rng.uniform(-1, 1, (h, c)) * np.sqrt(6.0 / (h + c))).astype(dtype),
            "c": np.zeros(c, dtype=dtype),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        # singular-vector estimate: state, not a parameter (no gradient), saved with the weights
        self.sn_u = _unit(rng.standard_normal(h)).astype(dtype)
        self.sn_u[...] = self._top_vector(min(h, 50))  # a cold start gets a long refinement
        self._act = ACTIVATIONS[activation]()
        self._dropout = Dropout(self.dropout, rng=rng) if self.dropout else None
        self._bufs: dict[str, np.ndarray] = {}
        self._rank1 = np.empty((h, h), dtype=dtype)
        self._w_eff = np.empty((h, h), dtype=dtype)
        self._cache: dict[str, Any] = {}
        self._stats: dict[str, float] = {}
        #: batch-maximum relative residual per iteration of the last training step
        self.last_residuals: dict[str, list[float]] = {"forward": [], "backward": []}

    # ----------------------------------------------------------------- construction
    @classmethod
    def build(
        cls,
        n_inputs: int,
        n_classes: int,
        hidden: int | Sequence[int] = DEFAULT_HIDDEN,
        activation: str = "relu",
        dropout: float = 0.0,
        seed: int = 0,
        dtype: np.dtype | type = np.float32,
        **options: Any,
    ) -> RecurrentNetwork:
        """Same arguments as ``MLP.build``. The network has one recurrent hidden state, whose
        size is ``hidden`` (an int) or its first entry (a sequence, as ``--hidden`` gives).
        ``options``: ``max_iter``, ``tol``, ``damping``, ``spectral_bound``, ``spectral_steps``."""
        sizes = [hidden] if isinstance(hidden, int | np.integer) else list(hidden)
        if not sizes:
            raise ValueError("an rbp network needs a hidden-state size")
        return cls(n_inputs, n_classes, int(sizes[0]), activation, dropout=dropout, seed=seed,
                   dtype=dtype, **options)

    @classmethod
    def from_config(
        cls, config: dict[str, Any], dtype: np.dtype | type = np.float32, seed: int = 0
    ) -> RecurrentNetwork:
        """Rebuild from ``config()`` (freshly initialised weights; load them afterwards)."""
        if config.get("kind") != cls.kind:
            raise ValueError(f"not an rbp config: kind {config.get('kind')!r}")
        keys = ("dropout", "max_iter", "tol", "damping", "spectral_bound", "spectral_steps")
        return cls(int(config["n_inputs"]), int(config["n_classes"]), int(config["hidden"]),
                   str(config["activation"]), seed=seed, dtype=dtype,
                   **{k: config[k] for k in keys if k in config})

    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n_inputs": self.n_inputs,
            "n_classes": self.n_classes,
            "hidden": self.hidden,
            "activation": self.activation,
            "dropout": self.dropout,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "damping": self.damping,
            "spectral_bound": self.spectral_bound,
            "spectral_steps": self.spectral_steps,
        }

    @property
    def dtype(self) -> np.dtype:
        return self.params["W"].dtype

    # ------------------------------------------------------------ normalisation of W
    def _top_vector(self, steps: int) -> np.ndarray:
        """``sn_u`` refined towards the top left singular vector of ``W`` (a new array)."""
        return top_left_singular_vector(self.params["W"], self.sn_u, steps)

    def _scale(self, u: np.ndarray) -> tuple[float, float]:
        """``(σ̂, s)`` with ``σ̂ = ‖Wᵀu‖₂`` and ``s = min(1, γ/σ̂)``."""
        sigma = float(np.linalg.norm(self.params["W"].T @ u))
        return sigma, (self.spectral_bound / sigma if sigma > self.spectral_bound else 1.0)

    def effective_weight(self) -> np.ndarray:
        """The recurrent matrix inference uses, ``s·W`` (a new array)."""
        return self.params["W"] * self._scale(self._top_vector(self.spectral_steps))[1]

    # ------------------------------------------------------------------ training path
    def _buffers(self, n: int) -> dict[str, np.ndarray]:
        first = next(iter(self._bufs.values()), None)
        if first is None or first.shape[0] != n or first.dtype != self.dtype:
            shape = (n, self.hidden)
            names = ("xu", "h0", "h1", "z0", "z1", "diff", "tmp", "fprime", "gh", "drop")
            self._bufs = {k: np.empty(shape, dtype=self.dtype) for k in names}
            self._bufs["logits"] = np.empty((n, self.n_classes), dtype=self.dtype)
            self._bufs["dx"] = np.empty((n, self.n_inputs), dtype=self.dtype)
        return self._bufs

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Relax to ``h*`` and return the logits ``(N, C)``; caches what backward needs.

        With ``training`` dropout is on and the refined singular-vector estimate is kept.
        """
        p = self.params
        x = np.asarray(x, dtype=self.dtype)
        buf = self._buffers(x.shape[0])
        u = self._top_vector(self.spectral_steps)
        if training:
            self.sn_u[...] = u
        sigma, s = self._scale(u)
        np.multiply(p["W"], s, out=self._w_eff)
        np.matmul(x, p["U"], out=buf["xu"])
        buf["xu"] += p["b"]
        w_eff, xu, act = self._w_eff, buf["xu"], self._act

        def step(h: np.ndarray, out: np.ndarray) -> None:
            np.matmul(h, w_eff, out=out)
            out += xu
            act.forward(out)  # in place; remembers its output for f'(u*) in backward

        residuals: list[float] = []
        h_star, iters = relax(step, (buf["h0"], buf["h1"], buf["diff"]), damping=self.damping,
                              tol=self.tol, max_iter=self.max_iter, which="forward",
                              residuals=residuals)
        readout_in = h_star
        if self._dropout is not None and training:
            readout_in = buf["drop"]
            np.copyto(readout_in, h_star)
            self._dropout.forward(readout_in, training=True)
        np.matmul(readout_in, p["R"], out=buf["logits"])
        buf["logits"] += p["c"]
        self._cache = {"x": x, "h": h_star, "r": readout_in, "u": u, "sigma": sigma, "s": s,
                       "dropped": readout_in is not h_star}
        self.last_residuals = {"forward": residuals, "backward": []}
        self._stats = {"forward_iterations": float(iters)}
        return buf["logits"]

    def backward(self, grad: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate ``dL/dlogits (N, C)`` through the equilibrium (the adjoint
        relaxation); fills ``grads`` and returns ``dL/dx (N, D)``, or None with
        ``input_grad=False`` (training never uses it)."""
        if not self._cache:
            raise RuntimeError("RecurrentNetwork.backward called before forward")
        p, g, cache = self.params, self.grads, self._cache
        buf = self._buffers(grad.shape[0])
        np.matmul(cache["r"].T, grad, out=g["R"])
        np.sum(grad, axis=0, out=g["c"])
        gh = buf["gh"]
        np.matmul(grad, p["R"].T, out=gh)
        if cache["dropped"]:
            self._dropout.backward(gh)
        fprime = buf["fprime"]
        fprime.fill(1)
        self._act.backward(fprime)  # f'(u*) from the activation's cached output h*
        w_eff, tmp = self._w_eff, buf["tmp"]

        def step(z: np.ndarray, out: np.ndarray) -> None:
            np.multiply(z, fprime, out=tmp)
            np.matmul(tmp, w_eff.T, out=out)
            out += gh

        residuals: list[float] = []
        z, iters = relax(step, (buf["z0"], buf["z1"], buf["diff"]), damping=self.damping,
                         tol=self.tol, max_iter=self.max_iter, which="backward",
                         residuals=residuals)
        delta = np.multiply(z, fprime, out=tmp)
        np.matmul(cache["h"].T, delta, out=g["W"])  # dL/d(sW)
        sigma, s = cache["sigma"], cache["s"]
        if s < 1.0:
            # through W_eff = (γ/σ̂) W: dL/dW = s (G - <G, W>/σ̂ · u vᵀ), v = Wᵀu/σ̂
            u = cache["u"]
            coef = float(np.vdot(g["W"], p["W"])) / sigma
            np.outer(u, (p["W"].T @ u) / sigma, out=self._rank1)
            self._rank1 *= coef
            g["W"] -= self._rank1
            g["W"] *= s
        np.matmul(cache["x"].T, delta, out=g["U"])
        np.sum(delta, axis=0, out=g["b"])
        self.last_residuals["backward"] = residuals
        self._stats["backward_iterations"] = float(iters)
        if not input_grad:
            return None
        np.matmul(delta, p["U"].T, out=buf["dx"])
        return buf["dx"]

    def training_stats(self) -> dict[str, float]:
        """Fixed-point iterations of the last training step (``forward_iterations``,
        ``backward_iterations``)."""
        return dict(self._stats)

    # ------------------------------------------------------------------ parameters
    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters by name plus the singular-vector estimate ``sn_u``; the arrays
        themselves, not copies."""
        return {**self.params, "sn_u": self.sn_u}

    def param_pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(self.params[k], self.grads[k]) for k in self.params]

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy weights in place; names and shapes must match exactly."""
        copy_params_into(self.state_dict(), state)

    # ------------------------------------------------------------------ inference
    def predict_logits_with_stats(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """Logits ``(N, C)`` and the number of forward iterations; stateless."""
        p = self.params
        x = np.asarray(x, dtype=self.dtype)
        s = self._scale(self._top_vector(self.spectral_steps))[1]
        w_eff = p["W"] * s if s < 1.0 else p["W"]
        xu = x @ p["U"]
        xu += p["b"]
        act = self._act

        def step(h: np.ndarray, out: np.ndarray) -> None:
            np.matmul(h, w_eff, out=out)
            out += xu
            act.infer(out)

        scratch = (np.empty_like(xu), np.empty_like(xu), np.empty_like(xu))
        h_star, iters = relax(step, scratch, damping=self.damping, tol=self.tol,
                              max_iter=self.max_iter, which="forward")
        logits = h_star @ p["R"]
        logits += p["c"]
        return logits, iters

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, C)`` for inputs ``(N, D)``; thread-safe."""
        return self.predict_proba_with_stats(x)[0]

    def predict_proba_with_stats(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """``predict_proba`` plus ``{"iterations": forward relaxation sweeps}`` (the batch
        iterates together until its slowest sample converges)."""
        logits, iters = self.predict_logits_with_stats(x)
        return softmax(logits, out=logits), {"iterations": float(iters)}
