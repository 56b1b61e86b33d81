"""The training loop: mini-batch backprop with validation, early stopping and calibration.

Works for every network kind that follows the engine's interface (MLP, recurrent).
Inputs are images ``(N, H, W)`` float32 with ink = 1; the network reads their
``features.model_inputs`` (pixels or gradient planes, ``TrainConfig.features``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from .features import input_size, model_inputs
from .nn import MLP, NETWORKS, Network, network_class
from .nn.losses import SoftmaxCrossEntropy
from .nn.optim import clip_grad_norm, make_optimizer, make_schedule

__all__ = [
    "CALIBRATION_RULE",
    "KEEP",
    "TrainConfig",
    "TrainResult",
    "architecture",
    "build_network",
    "calibrate_reject_threshold",
    "evaluate",
    "predict_in_batches",
    "train",
]

#: Validation sets hold few errors after early stopping picked the best epoch, so the
#: data-driven rule often finds nothing to reject; below this no class has a clear lead
#: and the answer is "?" (on mnist5k's held-out images, answers under 0.4 were right 1 in 3).
MIN_REJECT_THRESHOLD = 0.4
#: validation answers under a threshold needed before their accuracy may set it: a well
#: trained network leaves two or three validation errors, and one of them alone at the bottom
#: of the confidences would otherwise turn every answer less sure than it into "?"
MIN_REJECT_EVIDENCE = 5
#: how ``calibrate_reject_threshold`` chooses, in words (recorded in the artifact)
CALIBRATION_RULE = (f"validation answers below the threshold, at least {MIN_REJECT_EVIDENCE} "
                    "distinct images, were right less than half the time; else "
                    f"{MIN_REJECT_THRESHOLD}")

#: multiply-adds of a step's largest matmul below which BLAS runs on one thread: waking
#: a second thread costs more than it saves on small matrices
SMALL_MATMUL = 4_000_000

#: which epoch's weights a run ends with (``TrainConfig.keep``)
KEEP = ("best", "last")

#: peak learning rate by optimizer when none is given
DEFAULT_LR = {"adam": 2e-3, "sgd": 0.05}


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (the ``ocr-train`` options and their defaults)."""

    model: str = MLP.kind
    #: None: the kind's ``DEFAULT_HIDDEN`` (its network class's)
    hidden: tuple[int, ...] = None  # type: ignore[assignment]
    activation: str = "relu"
    epochs: int = 60
    batch_size: int = 64
    optimizer: str = "adam"
    #: None: ``DEFAULT_LR`` of the optimizer
    lr: float = None  # type: ignore[assignment]
    weight_decay: float = 1e-3
    dropout: float = 0.1
    schedule: str = "cosine"
    warmup_epochs: int = 1
    clip_norm: float = 5.0
    label_smoothing: float = 0.05
    augment: bool = False
    #: what the network reads of each image: one of features.FEATURES
    features: str = "pixels"
    #: synthetic non-character examples (touching pairs, fragments) taught as one extra
    #: output class, so the segmenter can tell wrong cuts from characters (0: none)
    negatives: int = 0
    #: synthetic digits in writing styles the data lacks (flagged 1, crossed 7, open 4,
    #: font digits) added to the training split (0: none; see styles.py)
    styles: int = 0
    patience: int = 15
    #: which weights training ends with: "best", those of the best validation epoch (see
    #: ``train``), or "last", those of the schedule's last epoch (no early stopping)
    keep: str = "best"
    seed: int = 0
    val_split: float = 0.1
    options: dict[str, Any] = field(default_factory=dict)  # kind-specific (rbp) settings

    def __post_init__(self) -> None:
        if self.hidden is None:
            self.hidden = NETWORKS.get(self.model, MLP).DEFAULT_HIDDEN
        if self.lr is None:
            self.lr = DEFAULT_LR.get(self.optimizer, DEFAULT_LR["adam"])

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden"] = list(self.hidden)
        return data


@dataclass
class TrainResult:
    network: Network
    history: list[dict[str, float]]
    best_epoch: int
    seconds: float
    reject_threshold: float | None
    #: what the network reads (``config.features``): save it as the artifact's
    #: ``input.features``, or every reader feeds the network the wrong inputs
    features: str


def build_network(config: TrainConfig, n_inputs: int, n_classes: int) -> Network:
    """A freshly initialised network of ``config.model`` kind."""
    return network_class(config.model).build(
        n_inputs, n_classes, hidden=config.hidden, activation=config.activation,
        dropout=config.dropout, seed=config.seed, **config.options)


def architecture(network: Network) -> str:
    """What must match to start from another network's weights, as text: the kind, the
    layers and sizes, without training-only settings (dropout rates, initialisation)."""
    config = {k: v for k, v in network.config().items() if k != "dropout"}
    layers = config.pop("layers", None)
    if layers is not None:
        sizes = [str(layers[0]["in"])] + [str(la["out"]) for la in layers if "out" in la]
        acts = sorted({la["type"] for la in layers if la["type"] not in ("dense", "dropout")})
        config["layers"] = "-".join(sizes) + f" ({', '.join(acts)})"
    kind = config.pop("kind")
    return f"{kind} " + ", ".join(f"{k} {v}" for k, v in config.items())


def _start_from(network: Network, init: Network) -> None:
    """Copy ``init``'s weights into ``network``; ValueError if their architectures differ."""
    if architecture(init) != architecture(network):
        raise ValueError(
            f"cannot start from a {architecture(init)} network: this run builds "
            f"a {architecture(network)} one"
        )
    network.load_state_dict({k: v.copy() for k, v in init.state_dict().items()})


def predict_in_batches(
    network: Network, x: np.ndarray, batch: int = 1024, n_classes: int | None = None
) -> np.ndarray:
    """Class probabilities ``(N, C)`` for flattened inputs ``(N, D)``.

    ``n_classes`` keeps only the first C outputs, renormalised: a network trained with a
    non-character class has one more, and the answer is always one of the real classes.
    """
    probs = np.concatenate(
        [network.predict_proba(x[i : i + batch]) for i in range(0, len(x), batch)]
    ) if len(x) else np.zeros((0, network.n_classes), np.float32)
    if n_classes is None or n_classes == probs.shape[1]:
        return probs
    from .negatives import among_classes

    return among_classes(probs, n_classes)


def evaluate(
    network: Network, images: np.ndarray, labels: np.ndarray, n_classes: int | None = None, *,
    features: str,
) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``network`` on ``images (N, H, W)`` (answers among
    the first ``n_classes`` outputs, see ``predict_in_batches``), read as ``features``."""
    probs = predict_in_batches(network, model_inputs(images, features), n_classes=n_classes)
    return _loss_and_accuracy(probs, labels)


def _loss_and_accuracy(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    picked = probs[np.arange(len(labels)), labels].astype(np.float64)
    loss = float(-np.log(np.maximum(picked, 1e-12)).mean()) if len(labels) else math.nan
    acc = float((probs.argmax(axis=1) == labels).mean()) if len(labels) else math.nan
    return {"loss": loss, "accuracy": acc}


def calibrate_reject_threshold(
    network: Network, images: np.ndarray, labels: np.ndarray, n_classes: int | None = None, *,
    features: str,
) -> float:
    """Max-probability threshold below which answers are replaced by ``?``.

    It is the largest threshold for which the validation answers under it, at least
    ``MIN_REJECT_EVIDENCE`` of them, were right less than half the time: rejecting them removes
    more wrong answers than right ones, so the reject answer helps users instead of hiding
    correct characters. It is never below ``MIN_REJECT_THRESHOLD``, which it is when no such
    threshold exists. Repeated images count once.
    """
    return _reject_threshold(network, model_inputs(images, features), np.asarray(labels),
                             n_classes)


def _distinct(inputs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs (N, D), labels (N,))`` with repeated pairs kept once, in first-seen order.

    A weighted source's validation images are repeated (``mixing.py``); for the reject
    threshold a copy is no further evidence.
    """
    rows = np.concatenate([inputs, labels.reshape(-1, 1).astype(inputs.dtype)], axis=1)
    first = np.sort(np.unique(rows, axis=0, return_index=True)[1])
    return inputs[first], labels[first]


def _reject_threshold(network: Network, inputs: np.ndarray, labels: np.ndarray,
                      n_classes: int | None) -> float:
    """``calibrate_reject_threshold`` on network inputs ``(N, D)``."""
    inputs, labels = _distinct(inputs, labels)
    if len(labels) < MIN_REJECT_EVIDENCE:
        return MIN_REJECT_THRESHOLD
    probs = predict_in_batches(network, inputs, n_classes=n_classes)
    confidence = probs.max(axis=1)
    order = np.argsort(confidence, kind="stable")
    sorted_conf = confidence[order]
    right = (probs.argmax(axis=1) == labels)[order]
    counts = np.arange(1, len(right) + 1)
    mostly_wrong = np.flatnonzero((2 * np.cumsum(right) < counts)
                                  & (counts >= MIN_REJECT_EVIDENCE))
    if mostly_wrong.size == 0:
        return MIN_REJECT_THRESHOLD
    last = int(mostly_wrong[-1])
    if last + 1 == len(sorted_conf):
        return float(np.nextafter(sorted_conf[last], np.float32(np.inf)))
    return max(MIN_REJECT_THRESHOLD, float((sorted_conf[last] + sorted_conf[last + 1]) / 2))


#: bytes of inputs gathered per ``np.take``: several mini-batches at once, so small batches
#: do not pay two numpy calls each (a whole digits epoch is one gather)
GATHER_BYTES = 4 << 20


class _BatchBuffers:
    """Mini-batches in a given order, gathered with ``np.take(..., out=)`` into one
    preallocated buffer that holds several batches."""

    def __init__(self, batch_size: int, n_inputs: int, n_samples: int) -> None:
        per_gather = max(1, GATHER_BYTES // (4 * batch_size * n_inputs)) * batch_size
        rows = min(per_gather, n_samples)
        self.batch_size = batch_size
        self.x = np.empty((rows, n_inputs), np.float32)
        self.y = np.empty(rows, np.int64)

    def batches(self, x: np.ndarray, y: np.ndarray, order: np.ndarray):
        """Yield ``(inputs (B, D), labels (B,))`` views for ``x[order]``, ``y[order]`` in
        batch-size steps; each view is valid until the next one is taken."""
        rows, size = len(self.y), self.batch_size
        for first in range(0, len(order), rows):
            idx = order[first : first + rows]
            xs, ys = self.x[: len(idx)], self.y[: len(idx)]
            np.take(x, idx, axis=0, out=xs)
            np.take(y, idx, out=ys)
            for start in range(0, len(idx), size):
                yield xs[start : start + size], ys[start : start + size]


def _blas_threads(network: Network, batch_size: int) -> int | None:
    """1 for networks whose matmuls are too small to share, else None (the BLAS default).

    A rule on shapes only, not a timing: results differ in the last bits between thread
    counts, and the same command should train the same model whatever the load.
    """
    largest = max((batch_size * p.size for p, _ in network.param_pairs() if p.ndim == 2),
                  default=0)
    return 1 if largest < SMALL_MATMUL else None


def _with_negatives(
    images: np.ndarray, labels: np.ndarray, n_classes: int, config: TrainConfig,
    scheme: str | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The training set plus ``config.negatives`` non-character examples, labelled
    ``n_classes``; seeded apart from the training order so both stay reproducible."""
    if scheme is None:
        raise ValueError("non-character examples need the input scheme of the images")
    from .negatives import make_negatives

    extra = make_negatives(images, config.negatives, scheme,
                           np.random.default_rng([config.seed, 1]))
    return (np.concatenate([images.astype(np.float32, copy=False), extra]),
            np.concatenate([labels, np.full(len(extra), n_classes, labels.dtype)]))


def _with_styles(
    images: np.ndarray, labels: np.ndarray, config: TrainConfig, scheme: str | None,
    classes: Sequence[str] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The training set plus ``config.styles`` styled digits; seeded apart from the training
    order and the non-character examples."""
    if scheme is None or classes is None:
        raise ValueError("styled digits need the input scheme and the class names")
    from .styles import make_styled

    extra, extra_labels = make_styled(config.styles, list(classes), scheme,
                                      np.random.default_rng([config.seed, 2]))
    return (np.concatenate([images.astype(np.float32, copy=False), extra]),
            np.concatenate([labels, extra_labels.astype(labels.dtype)]))


def _augmented_inputs(images: np.ndarray, config: TrainConfig, rng: np.random.Generator):
    from .augment import augment_batch

    return model_inputs(augment_batch(images, rng), config.features)


def _training_set(
    config: TrainConfig, train_set: tuple[np.ndarray, np.ndarray], n_classes: int,
    scheme: str | None, classes: Sequence[str] | None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The training images and labels with the styled digits and non-character examples
    ``config`` asks for, and the network's number of outputs."""
    images, labels = train_set
    if len(images) == 0:
        raise ValueError("the training split is empty")
    if config.epochs <= 0 or config.batch_size <= 0:
        raise ValueError("epochs and batch size must be positive")
    if config.keep not in KEEP:
        raise ValueError(f"unknown keep {config.keep!r} (expected one of {KEEP})")
    n_outputs = n_classes
    if config.styles:
        images, labels = _with_styles(images, labels, config, scheme, classes)
    if config.negatives:
        images, labels = _with_negatives(images, labels, n_classes, config, scheme)
        n_outputs = n_classes + 1
    return images, labels, n_outputs


class _Steps:
    """The optimisation of one network: loss, optimizer, schedule, batches, step count."""

    def __init__(self, network: Network, config: TrainConfig, n_inputs: int,
                 n_samples: int) -> None:
        self.network, self.config = network, config
        self.loss_fn = SoftmaxCrossEntropy(config.label_smoothing)
        self.optimizer = make_optimizer(config.optimizer, network.param_pairs(), config.lr,
                                        config.weight_decay)
        self.grads = [g for _, g in self.optimizer.groups]
        self.per_epoch = math.ceil(n_samples / config.batch_size)
        self.schedule = make_schedule(config.schedule, config.lr,
                                      config.epochs * self.per_epoch,
                                      config.warmup_epochs * self.per_epoch)
        self.buffers = _BatchBuffers(config.batch_size, n_inputs, n_samples)
        self.step = 0

    def epoch(self, x_all: np.ndarray, y_all: np.ndarray, order: np.ndarray, epoch: int,
              bar: Any) -> tuple[float, int, dict[str, float]]:
        """One pass over ``x_all[order]``: the summed loss, the right answers and the
        summed training statistics of the network (fixed-point iterations)."""
        network, loss_fn, optimizer = self.network, self.loss_fn, self.optimizer
        loss_sum, correct, seen, stats_sum = 0.0, 0, 0, {}
        for xb, yb in self.buffers.batches(x_all, y_all, order):
            seen += len(yb)
            logits = network.forward(xb, training=True)
            loss_sum += loss_fn.forward(logits, yb) * len(yb)
            correct += int((loss_fn.probs.argmax(axis=1) == yb).sum())
            network.backward(loss_fn.backward(), input_grad=False)  # dL/dx is unused
            if self.config.clip_norm:
                clip_grad_norm(self.grads, self.config.clip_norm)
            optimizer.lr = self.schedule(self.step)
            optimizer.step()
            self.step += 1
            for key, value in network.training_stats().items():
                stats_sum[key] = stats_sum.get(key, 0.0) + value
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss_sum / seen:.4f}",
                                acc=f"{correct / seen:.4f}", refresh=False)
        if not math.isfinite(loss_sum):
            raise ValueError(f"training diverged in epoch {epoch} (the loss is not finite);"
                             " lower --lr")
        return loss_sum, correct, stats_sum


class _Best:
    """Early stopping: the best validation epoch so far from epoch ``first`` on, its
    weights, epochs since."""

    def __init__(self, first: int = 1) -> None:
        self.score = (-1.0, math.inf)  # (val accuracy, val loss)
        self.state: dict[str, np.ndarray] | None = None
        self.epoch, self.stale, self.first = 0, 0, first

    def update(self, epoch: int, val: dict[str, float], network: Network) -> None:
        if epoch >= self.first and (
                (val["accuracy"], -val["loss"]) > (self.score[0], -self.score[1])):
            self.score, self.epoch, self.stale = (val["accuracy"], val["loss"]), epoch, 0
            self.state = {k: v.copy() for k, v in network.state_dict().items()}
        else:
            self.stale += 1

    def restore(self, network: Network, epochs_run: int) -> int:
        """Load the best weights (if validation chose any); the epoch they are from."""
        if self.state is None:
            return epochs_run
        network.load_state_dict(self.state)
        return self.epoch


def _epochs(
    steps: _Steps, images: np.ndarray, fixed_inputs: np.ndarray | None, labels: np.ndarray,
    rng: np.random.Generator, val: tuple[np.ndarray, np.ndarray] | None, n_classes: int,
    best: _Best, log: Callable[[str], None] | None, bar: Any, started: float,
) -> list[dict[str, float]]:
    """Every epoch of a run, until early stopping: the history of per-epoch records."""
    config, network = steps.config, steps.network
    y_all = np.ascontiguousarray(labels, dtype=np.int64)
    history: list[dict[str, float]] = []
    for epoch in range(1, config.epochs + 1):
        x_all = (fixed_inputs if fixed_inputs is not None
                 else _augmented_inputs(images, config, rng))
        order = rng.permutation(len(x_all))
        loss_sum, correct, stats_sum = steps.epoch(x_all, y_all, order, epoch, bar)
        record: dict[str, float] = {
            "epoch": epoch,
            "loss": loss_sum / len(order),
            "accuracy": correct / len(order),
            "lr": steps.optimizer.lr,
            "seconds": round(time.perf_counter() - started, 3),
        }
        record.update({k: v / steps.per_epoch for k, v in stats_sum.items()})
        if val is not None:
            scores = _loss_and_accuracy(
                predict_in_batches(network, val[0], n_classes=n_classes), val[1])
            record["val_loss"], record["val_accuracy"] = scores["loss"], scores["accuracy"]
            best.update(epoch, scores, network)
        history.append(record)
        if log is not None:
            log(_format_record(record))
        if config.patience and config.keep == "best" and best.stale >= config.patience:
            if log is not None:
                log(f"early stopping: no validation gain for {config.patience} epochs; "
                    f"restoring epoch {best.epoch}")
            break
    return history


def train(
    config: TrainConfig,
    train_set: tuple[np.ndarray, np.ndarray],
    val_set: tuple[np.ndarray, np.ndarray] | None,
    n_classes: int,
    *,
    scheme: str | None = None,
    classes: Sequence[str] | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    init: Network | None = None,
) -> TrainResult:
    """Train a network on ``train_set = (images (N,H,W), labels (N,))``.

    ``init``: a network of the same architecture to start from (a fine-tune; ValueError
    otherwise), instead of fresh random weights.

    Validates after every epoch; with ``config.patience > 0`` stops once validation
    accuracy has not improved for that many epochs and restores the best weights; with 0 it
    runs every epoch and restores the best (of the second half, unless it starts from
    ``init``). With ``config.keep == "last"`` it runs every epoch and keeps the last. With
    ``config.negatives`` the network gets ``n_classes + 1`` outputs, the last one for
    non-character examples made from the training images in input ``scheme``; with
    ``config.styles``, styled digits of the digit ``classes`` (names) join the training set
    first.
    """
    rng = np.random.default_rng(config.seed)
    images, labels, n_outputs = _training_set(config, train_set, n_classes, scheme, classes)
    n_inputs = input_size(*images.shape[1:], config.features)
    network = build_network(config, n_inputs, n_outputs)
    if init is not None:
        _start_from(network, init)
    steps = _Steps(network, config, n_inputs, len(images))
    # inputs that do not change between epochs are computed once
    fixed_inputs = None if config.augment else model_inputs(images, config.features)
    val = None  # (inputs, labels)
    if val_set is not None and len(val_set[0]) > 0:
        val = (model_inputs(val_set[0], config.features), val_set[1])
    # Trained from scratch to the end of its schedule, a network is kept from the schedule's
    # second half: an early epoch at a high learning rate can top 500 validation images by
    # luck, undertrained. A fine-tune starts from a trained network: any epoch may be kept.
    first = 1 if config.patience or init is not None else config.epochs // 2 + 1
    best = _Best(first=config.epochs + 1 if config.keep == "last" else first)
    started = time.perf_counter()
    bar = _progress_bar(config.epochs * steps.per_epoch, progress)
    threads = threadpool_limits(_blas_threads(network, config.batch_size), user_api="blas")
    try:
        history = _epochs(steps, images, fixed_inputs, labels, rng, val, n_classes, best,
                          log, bar, started)
    finally:
        threads.restore_original_limits()
        if bar is not None:
            bar.close()
    best_epoch = best.restore(network, len(history))
    threshold = None
    if val is not None:
        threshold = _reject_threshold(network, *val, n_classes)
    return TrainResult(network, history, best_epoch, time.perf_counter() - started, threshold,
                       config.features)


def _format_record(record: dict[str, float]) -> str:
    parts = [f"epoch {int(record['epoch']):3d}", f"loss {record['loss']:.4f}",
             f"acc {record['accuracy']:.4f}"]
    if "val_accuracy" in record:
        parts += [f"val_loss {record['val_loss']:.4f}", f"val_acc {record['val_accuracy']:.4f}"]
    parts += [f"{k} {v:.1f}" for k, v in record.items() if k.endswith("_iterations")]
    parts.append(f"{record['seconds']:.1f}s")
    return "  ".join(parts)


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="batch", leave=False, dynamic_ncols=True, mininterval=0.2)
