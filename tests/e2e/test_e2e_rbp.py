"""A recurrent-backprop (rbp) model served by the real gunicorn, exactly like an MLP."""

import io

import numpy as np
import pytest
from PIL import Image

from ocr_service.cli import train_main
from ocr_service.datasets import load_dataset, split_dataset
from ocr_service.model_store import load_model
from ocr_service.predictor import Predictor
from ocr_testing.server_utils import running_server

pytestmark = pytest.mark.e2e


def _held_out_pngs(count: int) -> list[tuple[str, bytes]]:
    dataset = load_dataset("mnist5k")
    images, labels = split_dataset(dataset, seed=0).test
    picks = np.random.default_rng(1).choice(len(labels), count, replace=False)
    out = []
    for i in picks:
        buf = io.BytesIO()
        Image.fromarray((255 - images[i] * 255).astype(np.uint8)).save(buf, format="PNG")
        out.append((dataset.classes[labels[i]], buf.getvalue()))
    return out


def test_rbp_model_is_served_like_an_mlp(tmp_path):
    model = tmp_path / "rbp"
    assert train_main(["--model", "rbp", "--dataset", "mnist5k", "--hidden", "64",
                       "--epochs", "6", "--quiet", "--out", str(model)]) == 0
    predictor = Predictor(load_model(model))
    uploads = _held_out_pngs(20)
    with running_server(model, tmp_path) as server:
        info = server.get("/v1/model").json()
        assert info["kind"] == "rbp" and info["version"] == load_model(model).version
        right = 0
        for label, png in uploads:
            reply = server.post("/v1/predict", data=png,
                                headers={"Content-Type": "image/png"})
            assert reply.status_code == 200
            body = reply.json()
            expected = predictor.predict_bytes(png).to_dict()
            assert body["text"] == expected["text"]
            assert body["characters"][0]["top"][0]["p"] == pytest.approx(
                expected["characters"][0]["top"][0]["p"], abs=1e-3)
            assert body["model"]["version"] == info["version"]
            right += body["text"] == label
        assert right >= 16  # a 6-epoch model still reads most held-out digits
        metrics = server.get("/metrics").text
        assert "ocr_fixed_point_iterations_count" in metrics
        assert 'ocr_model_info{kind="rbp"' in metrics
