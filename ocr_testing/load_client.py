"""A bounded HTTP load generator for the hardening tests (loopback only, keep-alive).

Each thread keeps one ``http.client`` connection and posts the same upload back to back until
``stop()``, a time limit or a request limit. Any exception is a failed request; a connection
is reopened only when the server announced ``Connection: close``.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["LoadGenerator", "LoadStats"]


@dataclass
class LoadStats:
    """What the clients saw: statuses, failures (exception reprs), latencies, model versions."""

    statuses: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds, one per answered request
    versions: Counter = field(default_factory=Counter)
    #: one per request: (finished at, monotonic; seconds; status, 0 = failed; model version;
    #: the ``X-Served-By`` header of a load balancer)
    samples: list[tuple[float, float, int, str | None, str | None]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + len(self.failures)

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return 1000.0 * ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]

    def merge(self, other: LoadStats) -> None:
        self.statuses.update(other.statuses)
        self.failures += other.failures
        self.latencies += other.latencies
        self.versions.update(other.versions)
        self.samples += other.samples


class LoadGenerator:
    """``threads`` clients posting ``body`` to ``url + path``; use as a context manager.

    ``pause``: seconds each client waits between requests (0 = saturate).
    """

    def __init__(
        self,
        url: str,
        body: bytes,
        *,
        path: str = "/v1/predict",
        headers: dict[str, str] | None = None,
        threads: int = 4,
        max_seconds: float = 60.0,
        max_requests: int | None = None,
        pause: float = 0.0,
    ) -> None:
        address = urlsplit(url)
        if address.hostname != "127.0.0.1":
            raise ValueError("load is only generated on loopback (127.0.0.1)")
        self._address = (address.hostname, address.port)
        self._body = body
        self._path = path
        self._headers = {"Content-Type": "image/png", **(headers or {})}
        self._max_seconds = max_seconds
        self._pause = pause
        self._per_thread = None if max_requests is None else -(-max_requests // threads)
        self._stop = threading.Event()
        self._results = [LoadStats() for _ in range(threads)]
        self._threads = [
            threading.Thread(target=self._run, args=(s,), daemon=True) for s in self._results
        ]

    def __enter__(self) -> LoadGenerator:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> LoadStats:
        """Stop every client, wait for them, and return the merged statistics."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return self.stats()

    def stats(self) -> LoadStats:
        merged = LoadStats()
        for s in self._results:
            merged.merge(s)
        return merged

    def wait(self) -> LoadStats:
        """Wait until the clients reach their limits by themselves, then return the stats."""
        for t in self._threads:
            t.join(timeout=self._max_seconds + 30)
        return self.stats()

    def _run(self, stats: LoadStats) -> None:
        deadline = time.monotonic() + self._max_seconds
        conn: http.client.HTTPConnection | None = None
        sent = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self._per_thread is not None and sent >= self._per_thread:
                break
            if conn is None:
                conn = http.client.HTTPConnection(*self._address, timeout=30)
            sent += 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", self._path, body=self._body, headers=self._headers)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                stats.failures.append(repr(exc))
                stats.samples.append((time.monotonic(), time.perf_counter() - t0, 0, None, None))
                conn.close()
                conn = None
                continue
            seconds = time.perf_counter() - t0
            stats.latencies.append(seconds)
            stats.statuses[response.status] += 1
            version = None
            if response.status == 200:
                version = json.loads(payload)["model"]["version"]
                stats.versions[version] += 1
            served_by = response.getheader("X-Served-By")
            stats.samples.append((time.monotonic(), seconds, response.status, version, served_by))
            if response.will_close:
                conn.close()
                conn = None
            if self._pause:
                self._stop.wait(self._pause)
        if conn is not None:
            conn.close()
