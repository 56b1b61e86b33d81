"""Shared fixtures. BLAS is limited to one thread: tests run beside gunicorn workers and
other test processes on 2 cores, and one thread makes training bit-reproducible."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import pytest

from ocr_service.datasets import load_dataset, split_dataset
from ocr_service.model_store import ArtifactSpec, save_model
from ocr_service.training import TrainConfig, evaluate, train


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
