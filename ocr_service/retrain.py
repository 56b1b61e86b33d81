"""``ocr-feedback``: the loop from users' corrections to the served model, and their deletion.

``retrain`` fine-tunes the served model (``ocr-train --init``) on a general dataset plus the
corrections folder, scores the served and the new model on the held-out part of each, and
replaces the served artifact (atomically, for ``POST /v1/admin/reload`` or a rolling update
to pick up) only if the general accuracy dropped by at most ``--max-drop``. ``forget``
deletes one user's corrections, or given ones.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cli import (
    TEST_FRACTION,
    UsageError,
    _main,
    _Parser,
    _positive_float,
    _positive_int,
    _source,
    load_sources,
    train_main,
)
from .config import load_settings
from .mixing import SourceSpec
from .model_store import ModelArtifact, default_model_path, load_model, save_model, strip_suffix
from .training import evaluate

__all__ = ["DEFAULT_MAX_DROP", "main"]

#: largest fall of the general held-out accuracy a retrained model may have (a fraction)
DEFAULT_MAX_DROP = 0.01
#: exit status when the new model is refused by the accuracy gate (2 is a usage error)
REFUSED = 3


class _Refused(Exception):
    """The retrained model is worse on the general held-out images than allowed."""


def _folder(text: str) -> Path:
    if not text.strip():  # Path("") would be the current folder
        raise argparse.ArgumentTypeError("empty: give the corrections folder "
                                         "(or set OCR_FEEDBACK_DIR)")
    return Path(text)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ocr-feedback", description="Retrain from users' corrections, or "
                "delete them.")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    feedback_dir = load_settings().feedback_dir or None
    r = sub.add_parser("retrain", help="fine-tune the served model on the corrections")
    r.add_argument("--feedback", type=_folder, default=feedback_dir, required=not feedback_dir,
                   help="the corrections folder (default $OCR_FEEDBACK_DIR)")
    r.add_argument("--model", type=Path, default=None,
                   help="the served model (default $OCR_MODEL_PATH or the shipped one)")
    r.add_argument("--out", type=Path, default=None, help="where to write (default --model)")
    r.add_argument("--general", type=_source, default=SourceSpec("mnist5k"),
                   metavar="NAME[:DIR]", help="the general dataset whose held-out accuracy "
                   "must hold (default mnist5k)")  # fmt: skip
    r.add_argument("--weight", type=_positive_int, default=16, metavar="N",
                   help="times each correction counts per epoch (default 16)")
    r.add_argument("--epochs", type=_positive_int, default=10, metavar="N",
                   help="fine-tuning epochs (default 10)")
    r.add_argument("--lr", type=_positive_float, default=5e-4,
                   help="peak learning rate (default 5e-4)")
    r.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP,
                   help="refuse to write if the general held-out accuracy falls by more than "
                   f"this fraction (default {DEFAULT_MAX_DROP})")  # fmt: skip
    r.add_argument("--json", action="store_true", help="print the scores as JSON")
    f = sub.add_parser("forget", help="delete corrections: one user's, or given ones")
    f.add_argument("--feedback", type=_folder, default=feedback_dir, required=not feedback_dir,
                   help="the corrections folder (default $OCR_FEEDBACK_DIR)")
    f.add_argument("--user", help="delete every correction sent with this user tag")
    f.add_argument("--id", action="append", default=[], help="delete this correction (repeat)")
    return p


def _held_out(served: ModelArtifact, specs: list[SourceSpec]):
    """Every source's held-out split, as the fine-tune (same seed, fractions) makes them."""
    training = served.metadata.get("training", {})
    return load_sources(
        specs, seed=int(training.get("seed", 0)),
        val_split=float(training.get("config", {}).get("val_split", 0.1)),
        scheme=served.scheme, classes=served.classes,
    ).tests  # fmt: skip


def _score(artifact: ModelArtifact, tests: dict[str, Any]) -> dict[str, float | None]:
    return {
        label: evaluate(artifact.network, images, labels, n_classes=len(artifact.classes),
                        features=artifact.features)["accuracy"] if len(labels) else None
        for label, (images, labels) in tests.items()
    }  # fmt: skip


def _retrain(args: argparse.Namespace) -> None:
    model = strip_suffix(args.model) if args.model else default_model_path()
    out = strip_suffix(args.out) if args.out else model
    served = load_model(model)
    if args.feedback is None or not Path(args.feedback).is_dir():
        raise UsageError(f"no corrections folder at {args.feedback}")
    general = args.general
    specs = [general, SourceSpec("folder", Path(args.feedback), args.weight)]
    tests = _held_out(served, specs)
    before = _score(served, tests)
    with tempfile.TemporaryDirectory(prefix="ocr-retrain-") as tmp:
        argv = [
            "--init", str(model), "--out", str(Path(tmp, "model")), "--augment", "--quiet",
            "--epochs", str(args.epochs), "--lr", str(args.lr), "--patience", "0",
            "--name", served.name,
        ] + [a for spec in specs for a in ("--dataset", _spec_text(spec))]  # fmt: skip
        # its summary names the temporary file; the report below says it all (errors still
        # reach stderr)
        with contextlib.redirect_stdout(io.StringIO()):
            code = train_main(argv)
        if code != 0:
            raise UsageError("fine-tuning failed (see above)")
        tuned = load_model(Path(tmp, "model"))
    after = _score(tuned, tests)
    drop = before[general.label] - after[general.label]
    report = {
        "served": {"path": str(model), "version": served.version},
        "held_out": {label: {"size": len(tests[label][1]), "before": before[label],
                             "after": after[label]} for label in tests},
        "general": general.label, "drop": round(drop, 6), "max_drop": args.max_drop,
        "test_fraction": TEST_FRACTION,
    }  # fmt: skip
    if drop > args.max_drop:
        _print(args, {**report, "written": None})
        raise _Refused(f"not written: {general.label} held-out accuracy would fall by "
                       f"{drop:.4f}, more than --max-drop {args.max_drop}")
    written = save_model(out, tuned.network, tuned.given_metadata())
    _print(args, {**report, "written": {"path": str(out), "version": written.version}})


def _spec_text(spec: SourceSpec) -> str:
    where = f":{spec.data_dir}" if spec.data_dir else ""
    return f"{spec.name}{where}*{spec.weight}" if spec.weight > 1 else f"{spec.name}{where}"


def _print(args: argparse.Namespace, report: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(report))
        return
    print(f"{'held-out images':32} {'served':>8} {'retrained':>10}")
    for label, row in report["held_out"].items():
        cells = [f"{v:.4f}" if v is not None else "-" for v in (row["before"], row["after"])]
        print(f"{label + ' (' + str(row['size']) + ')':32} {cells[0]:>8} {cells[1]:>10}")
    written = report["written"]
    if written:
        print(f"wrote {written['path']} (version {written['version']}); serve it with "
              "POST /v1/admin/reload or a rolling restart")


def _forget(args: argparse.Namespace) -> None:
    from .feedback import FeedbackStore

    if not args.user and not args.id:
        raise UsageError("give --user TAG or --id ID")
    if args.feedback is None or not Path(args.feedback).is_dir():
        raise UsageError(f"no corrections folder at {args.feedback}")
    try:
        removed = FeedbackStore(args.feedback, 0).forget(user=args.user, ids=args.id)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"deleted {removed} correction(s) from {args.feedback}")


def _run(args: argparse.Namespace) -> None:
    (_retrain if args.command == "retrain" else _forget)(args)


def main(argv: Sequence[str] | None = None) -> int:
    """``ocr-feedback {retrain,forget}``: 0 done, 2 bad arguments or data, 3 refused."""
    try:
        return _main(_run, _parser(), argv)
    except _Refused as exc:
        print(f"ocr-feedback: {exc}", file=sys.stderr)
        return REFUSED


if __name__ == "__main__":
    sys.exit(main())
