"""The serving process's current predictor: loaded once, swapped atomically on reload.

Request threads read ``holder.predictor`` once per request (a single attribute read, atomic
under the GIL) and keep using that object, so a reload never changes a model mid-request.
A reload that fails keeps the previous predictor and records why.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from .config import Settings
from .image_errors import ImageError
from .metrics import Metrics
from .model_store import default_model_path, load_model, strip_suffix
from .predictor import Predictor

__all__ = ["ModelHolder", "ModelNotReadyError", "ReloadError"]

log = logging.getLogger(__name__)

#: while no model is loaded, requests retry loading at most this often (seconds)
_RETRY_INTERVAL = 1.0


class ReloadError(Exception):
    """The artifact on disk could not be loaded; the previous model (if any) keeps serving."""


class ModelNotReadyError(Exception):
    """No model could be loaded yet; the message says why (the app answers 503 not_ready)."""


def _probe_image() -> bytes:
    """A small PNG of one pen stroke: runs decoding, segmentation and the network once."""
    img = Image.new("L", (32, 32), 255)
    ImageDraw.Draw(img).line([(16, 5), (16, 27)], fill=0, width=3)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


_PROBE = _probe_image()


def _check(predictor: Predictor) -> None:
    """Predict the probe image before serving a model.

    Refuses a model that fails on a real input, and warms every code path in the process
    (under gunicorn: the master, before the workers fork), so the first request is not slow.
    """
    try:
        predictor.predict_bytes(_PROBE, top_k=1, segment="single")
    except ImageError:  # preprocessing's verdict on the probe, not the model's fault
        return
    except Exception as exc:
        raise ValueError(f"the model fails on a probe image ({type(exc).__name__}: {exc})") from exc


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ModelHolder:
    """Owns the predictor of one process and the record of the last load attempt."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._lock = threading.Lock()
        self._last_attempt = float("-inf")
        self.predictor: Predictor | None = None
        #: {"ok", "at", "version" | "error"} of the last load attempt, None before the first
        self.last_reload: dict[str, Any] | None = None
        #: gunicorn master to signal after a successful admin reload (set in each worker)
        self.master_pid: int | None = None

    @property
    def path(self) -> Path:
        configured = self._settings.model_path
        return strip_suffix(configured) if configured else default_model_path()

    def reload(self) -> Predictor:
        """Load the artifact from disk and swap it in; on failure keep the old one.

        Raises ReloadError with a one-line reason when the artifact is missing or invalid.
        """
        with self._lock:
            self._last_attempt = time.monotonic()
            try:
                predictor = Predictor(load_model(self.path), max_pixels=self._settings.max_pixels)
                _check(predictor)
            # The keep-serving boundary: whatever a broken artifact raises (a hand-edited
            # JSON, an engine bug), the old model stays and the master never dies on HUP.
            except Exception as exc:
                reason = f"cannot load model {self.path}: {exc}"
                self.last_reload = {"ok": False, "at": _now(), "error": reason}
                self._metrics.count_reload(False)
                log.warning("%s", reason)
                raise ReloadError(reason) from exc
            self.predictor = predictor
            artifact = predictor.artifact
            self.last_reload = {"ok": True, "at": _now(), "version": artifact.version}
            self._metrics.count_reload(True)
            self.publish()
            log.info("serving model %s version %s", artifact.name, artifact.version)
            return predictor

    def try_reload(self) -> bool:
        """``reload`` that reports failure as False instead of raising (startup, master HUP)."""
        try:
            self.reload()
        except ReloadError:
            return False
        return True

    def publish(self) -> None:
        """(Re)announce the served model in this process's metrics, e.g. after a fork."""
        if self.predictor is not None:
            a = self.predictor.artifact
            self._metrics.set_model(a.name, a.version, a.kind, str(a.metadata["sha256"]))

    def get(self) -> Predictor:
        """The predictor for one request; ModelNotReadyError while no model could be loaded.

        Without a model, a request retries the load at most once per second, so a model
        that appears on disk is picked up without a restart.
        """
        predictor = self.predictor
        if predictor is not None:
            return predictor
        if time.monotonic() - self._last_attempt >= _RETRY_INTERVAL:
            self.try_reload()
            predictor = self.predictor
            if predictor is not None:
                return predictor
        reason = (self.last_reload or {}).get("error", "model not loaded yet")
        raise ModelNotReadyError(reason)

    def propagate(self) -> bool:
        """Ask the gunicorn master to replace every worker (they load the new model).

        Returns False when this process is not a gunicorn worker (nothing else to update).
        """
        if self.master_pid is None:
            return False
        os.kill(self.master_pid, signal.SIGHUP)
        return True
