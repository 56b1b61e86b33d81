#!/usr/bin/env python
"""Serving speed: /v1/predict next to a no-op endpoint on the same gunicorn, in one run.

Starts gunicorn on a free loopback port with the production configuration
(``ocr_service.gunicorn_config``: workers, threads, preload, access log) but with this file's
``bench_app()`` as the WSGI app: the real ``create_app()`` plus ``POST /bench/noop``, which
reads the body and answers a small JSON object. That route exists only here, never in
production. The load generator is wrk (Debian package ``wrk``) when installed, else a
Python keep-alive client; every run is bounded by ``--duration`` and targets 127.0.0.1.

Beside it, on another port, runs the usual Flask digit app (``plain_flask_app.py``: Flask +
gunicorn sync x2, Pillow resize to 28x28, scikit-learn's MLPClassifier trained on mnist5k as
it starts; benchmark only), so that the side-by-side ratios come from one run.

Prints, as medians of ``--rounds`` interleaved rounds: predict vs no-op throughput at
saturation, /v1/predict and /healthz at 4 connections next to the plain app's (ratios per
round), the CPU time each server's workers spend per request on those two (user + system,
from /proc: it depends less on other work sharing the cores than requests per second do),
a drawing-page canvas against /healthz, p50 latency at 4 connections and at one
client, a 12-megapixel phone-photo JPEG at one client, /v1/predict/batch images per second,
and the RSS of every process of each service.

Usage: python scripts/bench_serve.py [--duration 6] [--rounds 3] [--model models/default]
(wrk: ``apt-get install wrk``; the Python client is far slower than the servers)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import io
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ocr_testing.renderings import drawn_seven

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
NOOP = "/bench/noop"
BATCH_SIZE = 64  # the service's default batch cap (OCR_MAX_BATCH)
SATURATION_CONNECTIONS = 8


def bench_app():
    """WSGI factory for gunicorn: the production app plus the benchmark's no-op route."""
    from flask import request

    from ocr_service.app import create_app

    app = create_app()

    @app.post(NOOP)
    def noop() -> dict[str, str]:
        request.get_data(cache=False)  # receive the same body as /v1/predict does
        return {"status": "ok"}

    return app


@dataclass(frozen=True)
class Body:
    data: bytes
    content_type: str


@dataclass(frozen=True)
class Result:
    requests_per_s: float
    p50_ms: float
    errors: int
    requests: int
    #: CPU time of the server's workers per request, set by ``measure``
    cpu_us: float = 0.0


def phone_photo_jpeg(width: int = 4000, height: int = 3000) -> bytes:
    """A 12-megapixel phone photo of a "7" on unevenly lit paper, with sensor noise, as a
    JPEG (quality 90) of a few MB."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 200.0 + 30.0 * (xs / width) - 25.0 * (ys / height)  # a lamp at one side
    page = Image.fromarray(light.astype(np.uint8), mode="L")
    corners = [(0.3, 0.25), (0.7, 0.25), (0.45, 0.8)]
    ImageDraw.Draw(page).line([(x * width, y * height) for x, y in corners], fill=40,
                              width=width // 60)
    pixels = np.asarray(page.filter(ImageFilter.GaussianBlur(2)), dtype=np.float32)
    pixels += np.random.default_rng(0).normal(0.0, 3.0, pixels.shape).astype(np.float32)
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L").convert("RGB")
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def multipart(parts: list[bytes]) -> Body:
    boundary = "benchboundary7d1f"
    chunks = []
    for i, data in enumerate(parts):
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{i}.png"'
            f"\r\nContent-Type: image/png\r\n\r\n".encode() + data + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return Body(b"".join(chunks), f"multipart/form-data; boundary={boundary}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def server_env(**extra: str) -> dict[str, str]:
    # benchmark-only, as the environment notes say: these pin a slower OpenBLAS kernel
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "PROMETHEUS_MULTIPROC_DIR")}
    return {**env, **extra}


@contextlib.contextmanager
def started(cmd: list[str], env: dict[str, str], port: int, ready_path: str,
            log_path: Path, cwd: Path = REPO) -> Iterator[subprocess.Popen]:
    """A server process, once ``GET ready_path`` answers 200; stopped (TERM) on exit."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not ready(port, ready_path):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{cmd} did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()  # SIGTERM: gunicorn's graceful stop
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        process.kill()  # only if it is still running: a reaped process is not signalled
        process.wait()


@contextlib.contextmanager
def plain_flask(log_path: Path) -> Iterator[tuple[int, subprocess.Popen]]:
    """The usual Flask digit app (``plain_flask_app.py``) under gunicorn sync x2."""
    port = free_port()
    cmd = [sys.executable, "-m", "gunicorn", "--preload", "--workers", "2",
           "--worker-class", "sync", "--bind", f"{HOST}:{port}",
           "--pythonpath", str(Path(__file__).resolve().parent), "plain_flask_app:app"]
    # one BLAS thread per worker, as this service's workers have (two 2-thread BLAS on two
    # cores collapse)
    # run from scripts/: gunicorn would read the service's gunicorn.conf.py in the checkout
    with started(cmd, server_env(OPENBLAS_NUM_THREADS="1"), port, "/health", log_path,
                 cwd=Path(__file__).resolve().parent) as p:
        yield port, p


def post(port: int, path: str, body: Body) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("POST", path, body.data, {"Content-Type": body.content_type})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def gunicorn(model: Path | None, log_path: Path) -> Iterator[tuple[int, subprocess.Popen]]:
    """The production gunicorn configuration serving ``bench_app()``; yields (port, master)."""
    port = free_port()
    # Production settings, except worker recycling: at saturation the default max_requests
    # (20,000) recycles every worker within a few rows and the rows would measure restarts.
    env = server_env(OCR_HOST=HOST, OCR_PORT=str(port), OCR_MAX_REQUESTS="0")
    if model is not None:
        env["OCR_MODEL_PATH"] = str(model.resolve())
    cmd = [sys.executable, "-m", "gunicorn", "--config", "python:ocr_service.gunicorn_config",
           "--pythonpath", str(Path(__file__).resolve().parent), "bench_serve:bench_app()"]
    with started(cmd, env, port, "/readyz", log_path) as process:
        yield port, process


def ready(port: int, path: str) -> bool:
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=1)
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False


def _worker_pids(master: int) -> list[str]:
    """The process ids of the master's worker processes."""
    return Path(f"/proc/{master}/task/{master}/children").read_text().split()


def workers_cpu_s(master: int) -> float:
    """User + system CPU time of the master's worker processes so far, seconds."""
    total = 0
    for pid in _worker_pids(master):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (after pid and name)
    return total / os.sysconf("SC_CLK_TCK")


def worker_rss_mb(master: int, with_master: bool = False) -> list[float]:
    """Resident set size of each of the master's worker processes (and of the master), MiB."""
    sizes = []
    for pid in [str(master)] * with_master + _worker_pids(master):
        status = Path(f"/proc/{pid}/status").read_text()
        kb = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))
        sizes.append(kb / 1024)
    return sizes


_WRK_SCRIPT = """
local f = assert(io.open({path!r}, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = {content_type!r}
"""


def run_wrk(port: int, path: str, body: Body | None, connections: int, seconds: float,
            workdir: Path) -> Result:
    """``body`` None: GET."""
    script_args = []
    if body is not None:
        body_path = workdir / f"body-{len(body.data)}.bin"
        body_path.write_bytes(body.data)
        script = workdir / f"post-{len(body.data)}.lua"
        script.write_text(_WRK_SCRIPT.format(path=str(body_path),
                                             content_type=body.content_type))
        script_args = ["-s", str(script)]
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "--latency",
           *script_args, f"http://{HOST}:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\b", out, re.M)
    p50_ms = float(p50.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[p50.group(2)]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return Result(rps, p50_ms, errors, requests)


def run_python(port: int, path: str, body: Body | None, connections: int, seconds: float,
               workdir: Path) -> Result:
    """Fallback load generator: keep-alive connections in threads until the deadline."""
    latencies: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + seconds
    method, data = ("POST", body.data) if body is not None else ("GET", None)
    headers = {"Content-Type": body.content_type} if body is not None else {}

    def client() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                conn.request(method, path, data, headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                conn.close()
                ok = False
            latencies.append(time.perf_counter() - start)
            errors[0] += not ok
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return Result(len(latencies) / elapsed, statistics.median(latencies) * 1e3, errors[0],
                  len(latencies))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of every measurement (medians are shown)")
    parser.add_argument("--model", type=Path, default=None,
                        help="model artifact (default $OCR_MODEL_PATH or models/default)")
    args = parser.parse_args(argv)

    load = run_wrk if shutil.which("wrk") else run_python
    client = "wrk 1 thread" if load is run_wrk else "Python client (wrk not installed)"
    png = drawn_seven()
    single = Body(png, "image/png")
    batch = multipart([png] * BATCH_SIZE)
    canvas = Body(drawn_seven(280, "RGBA"), "image/png")
    photo = Body(phone_photo_jpeg(), "image/jpeg")
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serve-")))
        port, master = stack.enter_context(gunicorn(args.model, workdir / "gunicorn.log"))
        plain_port, plain_master = stack.enter_context(plain_flask(workdir / "plain.log"))
        for where, path, body in ((port, NOOP, single), (port, "/v1/predict", single),
                                  (port, "/v1/predict/batch", batch),
                                  (port, "/v1/predict", photo),
                                  (plain_port, "/predict", single)):
            status, reply = post(where, path, body)
            if status != 200:
                raise SystemExit(f"{path} answered {status}: {reply[:300]!r}")
        print(f"/v1/predict of a {len(png)}-byte 28x28 PNG answers "
              f"{post(port, '/v1/predict', single)[1][:120].decode()}...; the plain app "
              f"{post(plain_port, '/predict', single)[1].decode()}; a "
              f"{len(photo.data) / 1e6:.1f} MB 12-megapixel JPEG reads "
              f"{post(port, '/v1/predict', photo)[1][:40].decode()}...", file=sys.stderr)

        masters = {port: master.pid, plain_port: plain_master.pid}

        def measure(where: int, path: str, body: Body | None, connections: int) -> Result:
            load(where, path, body, connections, min(1.0, args.duration), workdir)  # warm-up
            cpu = workers_cpu_s(masters[where])
            result = load(where, path, body, connections, args.duration, workdir)
            cpu = workers_cpu_s(masters[where]) - cpu
            result = dataclasses.replace(result, cpu_us=cpu / max(result.requests, 1) * 1e6)
            print(f"  :{where}{path} c={connections}: {result.requests_per_s:8.0f} req/s, "
                  f"p50 {result.p50_ms:.2f} ms, {result.cpu_us:.0f} us CPU per request, "
                  f"errors {result.errors}", file=sys.stderr)
            return result

        scenarios = {
            "noop": (port, NOOP, single, SATURATION_CONNECTIONS),
            "predict": (port, "/v1/predict", single, SATURATION_CONNECTIONS),
            "unsplit": (port, "/v1/predict?segment=single", single, SATURATION_CONNECTIONS),
            "four": (port, "/v1/predict", single, 4),
            "plain_four": (plain_port, "/predict", single, 4),
            "health": (port, "/healthz", None, 4),
            "plain_health": (plain_port, "/health", None, 4),
            "canvas": (port, "/v1/predict", canvas, 4),
            "noop_four": (port, NOOP, single, 4),
            "one": (port, "/v1/predict", single, 1),
            "photo": (port, "/v1/predict", photo, 1),
            "batched": (port, "/v1/predict/batch", batch, 4),
        }
        # Every round measures every row in turn, so a slow spell of the shared machine
        # hits all rows of a round alike; ratios are taken within a round.
        runs: dict[str, list[Result]] = {name: [] for name in scenarios}
        for _ in range(args.rounds):
            for name, scenario in scenarios.items():
                runs[name].append(measure(*scenario))
        rss = worker_rss_mb(master.pid)
        total = sum(worker_rss_mb(master.pid, with_master=True))
        plain_total = sum(worker_rss_mb(plain_master.pid, with_master=True))

    def median(name: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs[name])

    def ratio(name: str, of: str, attr: str = "requests_per_s") -> str:
        ratios = [getattr(r, attr) / getattr(n, attr)
                  for r, n in zip(runs[name], runs[of], strict=True)]
        return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"

    errors = sum(r.errors for results in runs.values() for r in results)
    rate = {name: median(name, "requests_per_s") for name in runs}
    p50 = {name: median(name, "p50_ms") for name in runs}
    cpu = {name: median(name, "cpu_us") for name in runs}
    rows = [
        ("no-op POST (same body), 8 connections", f"{rate['noop']:,.0f} req/s", "", ""),
        ("/v1/predict, 8 connections", f"{rate['predict']:,.0f} req/s",
         f"{ratio('predict', 'noop')} no-op", ""),
        ("/v1/predict?segment=single, 8 connections", f"{rate['unsplit']:,.0f} req/s",
         f"{ratio('unsplit', 'noop')} no-op", ""),
        ("/v1/predict, 4 connections", f"{rate['four']:,.0f} req/s",
         f"{ratio('four', 'plain_four')} plain", "≥ 1.0x"),
        ("plain Flask app /predict, 4 connections", f"{rate['plain_four']:,.0f} req/s", "", ""),
        ("/healthz, 4 connections", f"{rate['health']:,.0f} req/s",
         f"{ratio('health', 'plain_health')} plain", "≥ 1.0x"),
        ("plain Flask app /health, 4 connections", f"{rate['plain_health']:,.0f} req/s", "",
         ""),
        ("server CPU per request, /v1/predict, 4 conn.", f"{cpu['four']:,.0f} us",
         f"{ratio('four', 'plain_four', 'cpu_us')} plain", ""),
        ("server CPU per request, /healthz, 4 conn.", f"{cpu['health']:,.0f} us",
         f"{ratio('health', 'plain_health', 'cpu_us')} plain", ""),
        ("/v1/predict, 280x280 canvas PNG, 4 conn.", f"{rate['canvas']:,.0f} req/s",
         f"{ratio('canvas', 'health')} /healthz", "≥ 0.5x"),
        ("/v1/predict p50, 4 connections", f"{p50['four']:.2f} ms",
         f"plain {p50['plain_four']:.2f}, no-op {p50['noop_four']:.2f}", "≤ 2 ms"),
        ("/v1/predict p50, 1 client", f"{p50['one']:.2f} ms", "", ""),
        (f"/v1/predict p50, {len(photo.data) / 1e6:.1f} MB 12-MP JPEG, 1 client",
         f"{p50['photo']:.0f} ms", "", "< 100 ms"),
        (f"/v1/predict/batch ({BATCH_SIZE} images), 4 connections",
         f"{rate['batched'] * BATCH_SIZE:,.0f} images/s", "", "≥ 8,000"),
        ("worker RSS", " / ".join(f"{mb:.0f} MB" for mb in rss), "", ""),
        ("RSS of all processes", f"{total:.0f} MB", f"plain {plain_total:.0f} MB", "lowest"),
    ]
    print(f"\nserving: gunicorn, production settings ({len(rss)} workers), loopback, {client}; "
          f"median of {args.rounds} interleaved rounds of {args.duration:g} s per row (ratios: "
          f"median and range of the per-round ratios); plain = the usual Flask digit app "
          f"(scripts/plain_flask_app.py, gunicorn sync x2) in the same run; load average "
          f"{os.getloadavg()[0]:.2f} (the client and servers share the cores)")
    print(f"| {'measurement':<44} | {'result':>16} | {'ratio':>24} | {'goal':>8} |")
    print(f"|{'-' * 46}|{'-' * 17}:|{'-' * 25}:|{'-' * 9}:|")
    for name, value, extra, goal in rows:
        print(f"| {name:<44} | {value:>16} | {extra:>24} | {goal:>8} |")
    if errors:
        print(f"warning: {errors} failed requests during the runs")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
