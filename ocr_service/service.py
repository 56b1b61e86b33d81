"""What the routes need of the running service, stored in ``app.extensions["ocr"]``.

Its own module so that ``app`` (which builds it) and ``api`` (which reads it) do not import
each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings
from .feedback import FeedbackStore
from .metrics import Metrics
from .model_holder import ModelHolder

__all__ = ["Service"]


@dataclass
class Service:
    """The settings, the model holder, the metrics and the corrections folder of one app."""

    settings: Settings
    holder: ModelHolder
    metrics: Metrics
    #: the corrections folder; None when feedback is off (no ``OCR_FEEDBACK_DIR``)
    feedback: FeedbackStore | None = None
