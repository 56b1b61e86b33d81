"""Prometheus metrics of the service, counted across every gunicorn worker.

With ``PROMETHEUS_MULTIPROC_DIR`` set *before* ``prometheus_client`` is first imported (the
gunicorn configuration does that), each process writes its samples to files in that
directory and ``render`` merges them, so a scrape that lands on any worker sees them all.
Without it (tests, ``flask run``) the metrics live in a registry of their own.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

__all__ = ["Metrics", "mark_process_dead", "multiprocess_enabled"]

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
_ITERATION_BUCKETS = (1, 2, 3, 5, 8, 13, 20, 30, 50, 75, 100, 150, 200, 300, 500)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def mark_process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (gunicorn ``child_exit`` hook)."""
    if multiprocess_enabled():
        prom_multiprocess.mark_process_dead(pid)



def _feedback_counters(registry: CollectorRegistry | None) -> tuple[Counter, Counter]:
    """The counters of /v1/feedback: corrections by true and read class, refusals by code."""
    corrections = Counter(
        "ocr_feedback_corrections_total",
        "Characters corrected through /v1/feedback, by true class and the class the model "
        "read ('?' = rejected): a confusion matrix of what users write.",
        ("true_class", "read_class"),
        registry=registry,
    )
    refused = Counter(
        "ocr_feedback_refused_total",
        "Corrections refused, by error code (feedback_store_full, count_mismatch, ...).",
        ("reason",),
        registry=registry,
    )
    return corrections, refused


class Metrics:
    """The service's metric families and the exposition of all processes' samples."""

    def __init__(self) -> None:
        self._multiprocess = multiprocess_enabled()
        self._registry = CollectorRegistry()
        # In multiprocess mode samples go to files and are read back by the collector,
        # so the families must not also be registered (they would be reported twice).
        reg = None if self._multiprocess else self._registry
        self.requests = Counter(
            "ocr_http_requests_total",
            "HTTP requests by route, method and status code.",
            ("route", "method", "status"),
            registry=reg,
        )
        self.latency = Histogram(
            "ocr_http_request_duration_seconds",
            "Time from the start of request handling to the response, by route and status.",
            ("route", "status"),
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.predictions = Counter(
            "ocr_predictions_total",
            "Recognised characters by predicted class ('?' = rejected as uncertain).",
            ("char",),
            registry=reg,
        )
        self.iterations = Histogram(
            "ocr_fixed_point_iterations",
            "Mean fixed-point relaxation iterations per prediction (recurrent 'rbp' models).",
            buckets=_ITERATION_BUCKETS,
            registry=reg,
        )
        self.model_info = Gauge(
            "ocr_model_info",
            "1 while any live process serves this model version (sha256 of its weights).",
            ("name", "version", "kind", "sha256"),
            multiprocess_mode="livemax",
            registry=reg,
        )
        self.reloads = Counter(
            "ocr_model_reloads_total",
            "Model reload attempts by result (ok, error).",
            ("result",),
            registry=reg,
        )
        self.corrections, self.feedback_refused = _feedback_counters(reg)
        self._model_labels: tuple[str, str, str, str] | None = None
        #: (route, method, status) -> its request counter and latency histogram: looking a
        #: labelled series up costs more than counting in it (routes, methods and statuses
        #: are bounded sets, so is this)
        self._request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        #: predicted class -> its counter (the model's classes and "?")
        self._prediction_series: dict[str, Any] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        series = self._request_series.get((route, method, status))
        if series is None:
            code = str(status)
            series = (self.requests.labels(route, method, code), self.latency.labels(route, code))
            self._request_series[(route, method, status)] = series
        series[0].inc()
        series[1].observe(seconds)

    def count_predictions(self, chars: Iterable[str]) -> None:
        """One count per character; each class's series is written once per call."""
        for char, count in collections.Counter(chars).items():
            series = self._prediction_series.get(char)
            if series is None:
                series = self._prediction_series[char] = self.predictions.labels(char)
            series.inc(count)

    def count_corrections(self, pairs: Iterable[tuple[str, str]]) -> None:
        """One count per stored character: ``(true class, read class)``."""
        for true_class, read_class in pairs:
            self.corrections.labels(true_class, read_class).inc()

    def count_feedback_refused(self, reason: str) -> None:
        self.feedback_refused.labels(reason).inc()

    def observe_iterations(self, iterations: float) -> None:
        self.iterations.observe(iterations)

    def set_model(self, name: str, version: str, kind: str, sha256: str) -> None:
        """Publish the model this process serves (and withdraw the one it served before)."""
        labels = (name, version, kind, sha256)
        if self._model_labels is not None and self._model_labels != labels:
            self.model_info.labels(*self._model_labels).set(0)
        self.model_info.labels(*labels).set(1)
        self._model_labels = labels

    def count_reload(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "error").inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text of every process's samples, and its content type."""
        if self._multiprocess:
            registry = CollectorRegistry()
            prom_multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self._registry), CONTENT_TYPE_LATEST
