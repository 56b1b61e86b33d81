"""Plot the residual per iteration of the forward and backward relaxations of an rbp model.

    python scripts/plot_relaxation.py --out docs/relaxation.png

trains ``ocr-train --model rbp --hidden 256 --activation relu --dataset digits --seed 0``
into a temporary folder (``--model PATH`` uses an existing rbp artifact instead), then
relaxes the held-out digits test images to the fixed point ``h*`` and the adjoint ``z`` for
the cross-entropy of their true labels. Both relaxations are re-run in float64 with a
tolerance far below the model's, so the curves show the geometric convergence past the
point where training and serving stop (the model's ``tol``, drawn as a line). The untrained
network (same seed) is drawn for contrast.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from ocr_service.cli import train_main
from ocr_service.datasets import load_dataset, split_dataset
from ocr_service.features import model_inputs
from ocr_service.model_store import load_model
from ocr_service.nn.losses import SoftmaxCrossEntropy
from ocr_service.nn.recurrent import RecurrentNetwork

TIGHT_TOL = 1e-12


def residual_curves(network: RecurrentNetwork, x: np.ndarray, y: np.ndarray) -> dict[str, list]:
    """Batch-maximum relative residual per iteration of both relaxations, in float64."""
    exact = RecurrentNetwork.from_config(
        {**network.config(), "tol": TIGHT_TOL, "max_iter": 2000, "dropout": 0.0},
        dtype=np.float64,
    )
    exact.load_state_dict(network.state_dict())
    loss = SoftmaxCrossEntropy()
    loss.forward(exact.forward(x.astype(np.float64), training=False), y)
    exact.backward(loss.backward())
    return exact.last_residuals


def plot(curves: dict[str, dict[str, list]], tol: float, bound: float, title: str,
         out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    colours = {"forward": "tab:blue", "backward": "tab:orange"}
    for label, style in (("trained", "-"), ("untrained", ":")):
        for which, colour in colours.items():
            res = np.asarray(curves[label][which])
            reached = int(np.argmax(res <= tol)) + 1
            name = "forward h*" if which == "forward" else "backward (adjoint) z"
            ax.semilogy(np.arange(1, len(res) + 1), res, style, color=colour, lw=1.8,
                        label=f"{name}, {label}: tol after {reached} it.")
    longest = max(len(c[w]) for c in curves.values() for w in colours)
    k = np.arange(1, longest + 1)
    ax.semilogy(k, bound ** (k - 1), "--", color="grey", lw=1,
                label=f"worst case for the bound γ = {bound}: γ^(k-1)")
    ax.axhline(tol, color="black", lw=0.8)
    ax.text(longest, tol / 1.5, f"model tol {tol:g}: training and serving stop here",
            ha="right", va="top", fontsize=8)
    ax.set_ylim(TIGHT_TOL / 10, 2.0)
    ax.set_xlabel("iteration")
    ax.set_ylabel("max over batch of ‖T(s) − s‖ / ‖T(s)‖")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="an rbp artifact (default: train one)")
    parser.add_argument("--out", type=Path, default=Path("docs/relaxation.png"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            path = Path(tmp) / "rbp-digits"
            train_args = ["--model", "rbp", "--hidden", "256", "--activation", "relu",
                          "--dataset", "digits", "--seed", "0", "--quiet"]
            if train_main([*train_args, "--out", str(path)]) != 0:
                return 1
        artifact = load_model(path)
    network = artifact.network
    if not isinstance(network, RecurrentNetwork):
        parser.error(f"{path} is a {artifact.kind} model, not rbp")
    seed = int(artifact.metadata.get("training", {}).get("seed", 0))
    images, labels = split_dataset(load_dataset("digits"), seed=seed).test
    x = model_inputs(images, artifact.features)
    untrained = RecurrentNetwork.from_config(network.config(), seed=seed)
    curves = {"trained": residual_curves(network, x, labels),
              "untrained": residual_curves(untrained, x, labels)}
    title = (f"Relaxations of the rbp network (hidden {network.hidden}, {network.activation}) "
             f"on {len(x)} held-out digits")
    plot(curves, network.tol, network.spectral_bound, title, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
