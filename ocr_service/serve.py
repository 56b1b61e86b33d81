"""``ocr-serve``: run the service under gunicorn with the packaged configuration.

Command-line options become ``OCR_*`` environment variables (read by ``gunicorn_config``),
then this process becomes the gunicorn master (``exec``), so signals such as ``HUP`` (reload
the model) and ``TERM`` (graceful stop) go straight to it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .config import ConfigError, load_settings

__all__ = ["gunicorn_command", "main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocr-serve",
        description="Serve the handwriting OCR API and drawing page with gunicorn.",
    )
    parser.add_argument("--host", help="address to bind (default $OCR_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default $OCR_PORT or 8000)")
    parser.add_argument(
        "--model", help="model artifact base path (default $OCR_MODEL_PATH or models/default)"
    )
    parser.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    return parser


def gunicorn_command() -> list[str]:
    """The argv that runs gunicorn with this package's configuration module."""
    return [sys.executable, "-m", "gunicorn", "--config", "python:ocr_service.gunicorn_config"]


def _warn_if_no_model(model_path: str | None) -> None:
    from .model_store import artifact_paths, default_model_path

    npz, meta = artifact_paths(model_path or default_model_path())
    if not (npz.exists() and meta.exists()):
        print(
            f"ocr-serve: warning: no model at {npz.with_suffix('')}; /readyz answers 503 "
            "until one is trained there (ocr-train ... --out PATH)",
            file=sys.stderr,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse options, validate the settings, then exec gunicorn (returns only on error)."""
    args = _parser().parse_args(argv)
    options = {"OCR_HOST": args.host, "OCR_PORT": args.port, "OCR_WORKERS": args.workers}
    if args.model is not None:
        options["OCR_MODEL_PATH"] = os.path.abspath(os.path.expanduser(args.model))
    for key, value in options.items():
        if value is not None:
            os.environ[key] = str(value)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"ocr-serve: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"ocr-serve: http://{settings.host}:{settings.port} with {settings.worker_count} "
        f"worker(s)",
        file=sys.stderr,
        flush=True,
    )
    _warn_if_no_model(settings.model_path)
    command = gunicorn_command()
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
