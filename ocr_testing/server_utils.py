"""Helpers for tests of the HTTP service: test images, and a real gunicorn on a free port.

``running_server`` starts ``ocr-serve``'s gunicorn (the packaged configuration) on a free
loopback port, waits for ``/readyz`` and stops it on exit; the hardening tests reuse it.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import requests
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent

__all__ = [
    "Server",
    "all_workers_serve",
    "copy_model",
    "digit_png",
    "free_port",
    "is_ready",
    "running_server",
    "save_variant",
    "wait_until",
]


def digit_png(kind: str = "1", size: int = 96, fmt: str = "PNG") -> bytes:
    """A black-on-white drawing of ``"1"`` (a vertical bar), ``"0"`` (a ring) or ``"blank"``."""
    img = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(img)
    pen = max(3, size // 12)
    if kind == "1":
        draw.line([(size // 2, size // 6), (size // 2, size * 5 // 6)], fill=0, width=pen)
    elif kind == "0":
        draw.ellipse([size // 4, size // 6, size * 3 // 4, size * 5 // 6], outline=0, width=pen)
    elif kind != "blank":
        raise ValueError(f"unknown drawing {kind!r}")
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def copy_model(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Copy the artifact at base path ``source`` to ``target`` (both files); returns it."""
    for suffix in (".npz", ".json"):
        shutil.copy(f"{source}{suffix}", f"{target}{suffix}")
    return Path(target)


def save_variant(source: str | os.PathLike[str], target: str | os.PathLike[str], name: str) -> str:
    """Save the model at ``source`` as a new version at ``target``: same answers, new weights hash.

    Returns the new version string.
    """
    from ocr_service.model_store import load_model, save_model

    artifact = load_model(source)
    state = artifact.network.state_dict()
    n_classes = artifact.network.n_classes
    bias = next(k for k, v in state.items() if v.shape == (n_classes,))
    state[bias] = state[bias] + 1e-4  # the readout bias: every logit moves equally, same answers
    artifact.network.load_state_dict(state)
    meta = {k: v for k, v in artifact.metadata.items()
            if k in ("classes", "calibration", "training", "metrics")}  # fmt: skip
    meta["input"] = {**artifact.metadata["input"], "features": artifact.features}
    return save_model(target, artifact.network, {**meta, "name": name}).version


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is truthy or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@dataclass
class Server:
    """A running gunicorn: ``url`` of the form http://127.0.0.1:PORT, ``process`` its master."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, timeout=10, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> set[int]:
        """PIDs of the master's current worker processes."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return {int(p) for p in children.read_text().split()}


def all_workers_serve(server: Server, version: str) -> bool:
    """True when 8 requests in a row, each on a new connection (so they spread over the
    workers), all report model ``version``."""
    return all(
        requests.get(server.url + "/v1/model", headers={"Connection": "close"},
                     timeout=10).json()["version"] == version
        for _ in range(8)
    )  # fmt: skip


def is_ready(url: str) -> bool:
    """``GET url/readyz`` answers 200 (False while nothing answers)."""
    try:
        return requests.get(url + "/readyz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@contextlib.contextmanager
def running_server(
    model_path: str | os.PathLike[str],
    tmp_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    workers: int = 2,
    require_ready: bool = True,
    timeout: float = 30.0,
) -> Iterator[Server]:
    """Run ``ocr-serve`` (gunicorn) on a free loopback port until the block exits.

    ``env`` adds OCR_* variables; with ``require_ready`` it waits for ``/readyz`` == 200,
    otherwise only for ``/healthz``, and then for all ``workers`` to be running. Server output
    goes to ``tmp_path/server.log``.
    """
    port = free_port()
    full_env = {
        **os.environ,
        "OPENBLAS_NUM_THREADS": "1",
        "OCR_ACCESS_LOG": "",
        **(env or {}),
    }
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp_path / "server.log"
    cmd = [
        sys.executable, "-m", "ocr_service.serve",
        "--host", "127.0.0.1", "--port", str(port),
        "--model", str(model_path), "--workers", str(workers),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        probe = is_ready if require_ready else _alive
        if not wait_until(lambda: probe(server.url) or process.poll() is not None, timeout):
            raise RuntimeError(f"server did not start in {timeout}s:\n{server.log()}")
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        # one worker answering is not all of them: tests compare worker PIDs before and after
        if not wait_until(lambda: len(server.worker_pids()) == workers, timeout):
            raise RuntimeError(f"{workers} workers did not start in {timeout}s:\n{server.log()}")
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _alive(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False
