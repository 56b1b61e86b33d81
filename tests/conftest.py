"""Shared fixtures. BLAS is limited to one thread: tests run beside gunicorn workers and
other test processes on 2 cores, and one thread makes training bit-reproducible."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import pytest

from ocr_service.app import create_app
from ocr_service.datasets import load_dataset, split_dataset
from ocr_service.model_store import ArtifactSpec, save_model
from ocr_service.training import TrainConfig, evaluate, train
from ocr_testing.server_utils import copy_model


def train_small_model(out: Path, model: str = "mlp", epochs: int = 25, **options) -> Path:
    """Train a real digits model in about a second and save it at ``out``."""
    dataset = load_dataset("digits")
    splits = split_dataset(dataset, seed=0)
    config = TrainConfig(model=model, epochs=epochs, hidden=(64,), patience=0, **options)
    result = train(config, splits.train, splits.val, len(dataset.classes))
    test = evaluate(result.network, *splits.test, features=result.features)
    save_model(out, result.network, ArtifactSpec(
        name=out.name, classes=dataset.classes, height=8, width=8, scheme=dataset.scheme,
        features=result.features, reject_threshold=result.reject_threshold,
        training={"dataset": "digits", "seed": 0, "epochs": epochs,
                  "config": config.to_json(), "history": result.history},
        metrics={"test_accuracy": test["accuracy"], "test_size": len(splits.test[1])},
    ))
    return out


@pytest.fixture(scope="session")
def small_model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Base path (no suffix) of a real MLP trained on scikit-learn's digits."""
    return str(train_small_model(tmp_path_factory.mktemp("models") / "digits-mlp"))


@pytest.fixture(scope="session")
def make_client(small_model_path: str):
    """``make_client(**settings)``: a Flask test client of the app serving the small model
    (``model_path`` and any other setting may be overridden)."""

    def make(**settings):
        return create_app({"model_path": small_model_path, **settings}).test_client()

    return make


@pytest.fixture
def model_copy(tmp_path: Path, small_model_path: str) -> Path:
    """A private copy of the small model that a test may overwrite or corrupt."""
    return copy_model(small_model_path, tmp_path / "model")
