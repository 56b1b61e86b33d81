"""Evaluation metrics and the ``ocr-eval --report`` plots (matplotlib, the ``train`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["classification_metrics", "format_metrics", "write_report"]


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix.

    ``labels (N,)`` are class indices, ``probs (N, C)`` predicted probabilities;
    ``confusion[i][j]`` counts images of class ``i`` predicted as ``j``.
    """
    n_classes = len(classes)
    predicted = probs.argmax(axis=1)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_pos = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted_count > 0, true_pos / predicted_count, 0.0)
        recall = np.where(support > 0, true_pos / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    per_class = [
        {"class": c, "precision": round(float(p), 4), "recall": round(float(r), 4),
         "f1": round(float(f), 4), "support": int(s)}
        for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    ]
    return {
        "accuracy": float(true_pos.sum() / max(1, len(labels))),
        "size": len(labels),
        "macro_f1": round(float(f1[support > 0].mean()) if (support > 0).any() else 0.0, 4),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def format_metrics(metrics: dict[str, Any]) -> str:
    """A plain-text table of the metrics for the terminal."""
    lines = [f"accuracy {metrics['accuracy']:.4f} on {metrics['size']} images "
             f"(macro F1 {metrics['macro_f1']:.4f})", "",
             f"{'class':>8} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}"]
    lines += [f"{row['class']:>8} {row['precision']:>9.4f} {row['recall']:>7.4f} "
              f"{row['f1']:>7.4f} {row['support']:>8d}" for row in metrics["per_class"]]
    classes = [row["class"] for row in metrics["per_class"]]
    width = max(4, *(len(str(v)) + 1 for r in metrics["confusion"] for v in r))
    lines += ["", "confusion matrix (rows: true, columns: predicted)",
              " " * 8 + "".join(f"{c:>{width}}" for c in classes)]
    lines += [f"{c:>8}" + "".join(f"{v:>{width}d}" for v in row)
              for c, row in zip(classes, metrics["confusion"], strict=True)]
    return "\n".join(lines)


def write_report(
    directory: Path,
    artifact: Any,
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    metrics: dict[str, Any],
    n_mistakes: int = 24,
) -> list[Path]:
    """Write ``confusion.png``, ``learning_curve.png`` and ``mistakes.png`` into ``directory``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    classes = artifact.classes
    history = artifact.metadata.get("training", {}).get("history", [])
    return [
        _save(_confusion_figure(plt, classes, metrics), directory / "confusion.png"),
        _save(_learning_curve_figure(plt, history), directory / "learning_curve.png"),
        _save(_mistakes_figure(plt, classes, images, labels, probs, n_mistakes),
              directory / "mistakes.png"),
    ]


def _confusion_figure(plt: Any, classes: list[str], metrics: dict[str, Any]) -> Any:
    fig, ax = plt.subplots(figsize=(1 + 0.5 * len(classes), 1 + 0.45 * len(classes)))
    confusion = np.array(metrics["confusion"])
    ax.imshow(confusion, cmap="Blues")
    for (i, j), v in np.ndenumerate(confusion):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if v > confusion.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {metrics['accuracy']:.4f} (n={metrics['size']})")
    return fig


def _learning_curve_figure(plt: Any, history: list[dict[str, float]]) -> Any:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        ax_loss.plot(epochs, [h.get(key, np.nan) for h in history], label=label)
    for key, label in (("accuracy", "train"), ("val_accuracy", "validation")):
        ax_acc.plot(epochs, [h.get(key, np.nan) for h in history], label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    return fig


def _mistakes_figure(plt: Any, classes: list[str], images: np.ndarray, labels: np.ndarray,
                     probs: np.ndarray, n_mistakes: int) -> Any:
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    # worst = most confident among the wrong answers
    wrong = wrong[np.argsort(-probs[wrong, predicted[wrong]])][:n_mistakes]
    cols = 8
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong, strict=False):
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"{classes[labels[i]]}→{classes[predicted[i]]} "
                     f"{probs[i, predicted[i]]:.2f}", fontsize=8)
    fig.suptitle(f"{len(wrong)} most confident mistakes (true→predicted p)")
    return fig


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
