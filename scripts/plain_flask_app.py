"""The usual Flask digit app, for ``bench_serve.py``'s side-by-side rows: benchmark only,
never shipped or imported by the service.

What users pick instead of this service, written as tutorials write it: Flask, Pillow to
decode and resize the upload to 28x28, and scikit-learn's ``MLPClassifier`` trained on
mnist5k when the module loads (``gunicorn --preload`` trains once, in the master). It reads
the raw request body as the image and answers the most likely digit.

    gunicorn --preload -w 2 --pythonpath scripts plain_flask_app:app
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from flask import Flask, request
from PIL import Image, ImageOps
from sklearn.neural_network import MLPClassifier

from ocr_service.datasets import load_dataset


def _train() -> MLPClassifier:
    digits = load_dataset("mnist5k")
    model = MLPClassifier(hidden_layer_sizes=(128,), max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged in 30 epochs: good enough here
        model.fit(digits.images.reshape(len(digits), -1), digits.labels)
    return model


model = _train()
app = Flask(__name__)


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
def predict() -> dict[str, object]:
    image = Image.open(io.BytesIO(request.get_data())).convert("L").resize((28, 28))
    pixels = np.asarray(ImageOps.invert(image), dtype=np.float32).reshape(1, -1) / 255.0
    probs = model.predict_proba(pixels)[0]
    digit = int(np.argmax(probs))
    return {"digit": digit, "confidence": float(probs[digit])}
