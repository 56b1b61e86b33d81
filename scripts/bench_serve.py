#!/usr/bin/env python
"""Serving speed: /v1/predict next to a no-op endpoint on the same gunicorn, in one run.

Starts gunicorn on a free loopback port with the production configuration
(``ocr_service.gunicorn_config``: workers, threads, preload, access log) but with this file's
``bench_app()`` as the WSGI app: the real ``create_app()`` plus ``POST /bench/noop``, which
reads the body and answers a small JSON object. That route exists only here, never in
production. The load generator is wrk (Debian package ``wrk``) when installed, else a
Python keep-alive client; every run is bounded by ``--duration`` and targets 127.0.0.1.

Prints, as medians of ``--rounds`` interleaved rounds: predict vs no-op throughput at
saturation (also for a drawing-page canvas), p50 latency at 4 connections (beside the
no-op's) and at one client, /v1/predict/batch images per second, and each worker's RSS.

Usage: python scripts/bench_serve.py [--duration 6] [--rounds 3] [--model models/default]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import os
import re
import shutil
import signal
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


def digit_png(size: int = 28, mode: str = "L") -> bytes:
    """A black-on-white "7" of ``size`` pixels: 28x28 grayscale as a user's small upload
    would be; 280x280 "RGBA" as the drawing page sends its opaque canvas."""
    from PIL import Image, ImageDraw

    img = Image.new(mode, (size, size), "white")
    corners = [(7, 6), (21, 6), (12, 23)]
    ImageDraw.Draw(img).line([(x * size // 28, y * size // 28) for x, y in corners],
                             fill="black", width=3 * size // 28)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
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
    env = {k: v for k, v in os.environ.items()
           # benchmark-only, as the environment notes say: these pin a slower OpenBLAS kernel
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "PROMETHEUS_MULTIPROC_DIR")}
    # Production settings, except worker recycling: at saturation the default max_requests
    # (20,000) recycles every worker within a few rows and the rows would measure restarts.
    env.update(OCR_HOST=HOST, OCR_PORT=str(port), OCR_MAX_REQUESTS="0")
    if model is not None:
        env["OCR_MODEL_PATH"] = str(model.resolve())
    cmd = [sys.executable, "-m", "gunicorn", "--config", "python:ocr_service.gunicorn_config",
           "--pythonpath", str(Path(__file__).resolve().parent), "bench_serve:bench_app()"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not ready(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield port, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ready(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=1)
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False


def worker_rss_mb(master: int) -> list[float]:
    """Resident set size of each of the master's worker processes, in MiB."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    sizes = []
    for pid in children:
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


def run_wrk(port: int, path: str, body: Body, connections: int, seconds: float,
            workdir: Path) -> Result:
    body_path = workdir / f"body-{len(body.data)}.bin"
    body_path.write_bytes(body.data)
    script = workdir / f"post-{len(body.data)}.lua"
    script.write_text(_WRK_SCRIPT.format(path=str(body_path), content_type=body.content_type))
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "--latency",
           "-s", str(script), f"http://{HOST}:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\b", out, re.M)
    p50_ms = float(p50.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[p50.group(2)]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return Result(rps, p50_ms, errors)


def run_python(port: int, path: str, body: Body, connections: int, seconds: float,
               workdir: Path) -> Result:
    """Fallback load generator: keep-alive connections in threads until the deadline."""
    latencies: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + seconds
    headers = {"Content-Type": body.content_type}

    def client() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                conn.request("POST", path, body.data, headers)
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
    return Result(len(latencies) / elapsed, statistics.median(latencies) * 1e3, errors[0])


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
    png = digit_png()
    single = Body(png, "image/png")
    batch = multipart([png] * BATCH_SIZE)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        workdir = Path(tmp)
        with gunicorn(args.model, workdir / "gunicorn.log") as (port, master):
            for path, body in ((NOOP, single), ("/v1/predict", single),
                               ("/v1/predict/batch", batch)):
                status, reply = post(port, path, body)
                if status != 200:
                    raise SystemExit(f"{path} answered {status}: {reply[:300]!r}")
            print(f"/v1/predict of a {len(png)}-byte 28x28 PNG answers "
                  f"{post(port, '/v1/predict', single)[1][:120].decode()}...", file=sys.stderr)

            def measure(path: str, body: Body, connections: int) -> Result:
                load(port, path, body, connections, min(2.0, args.duration), workdir)  # warm-up
                result = load(port, path, body, connections, args.duration, workdir)
                print(f"  {path} c={connections}: {result.requests_per_s:8.0f} req/s, "
                      f"p50 {result.p50_ms:.2f} ms, errors {result.errors}", file=sys.stderr)
                return result

            canvas = Body(digit_png(280, "RGBA"), "image/png")
            scenarios = {
                "noop": (NOOP, single, SATURATION_CONNECTIONS),
                "predict": ("/v1/predict", single, SATURATION_CONNECTIONS),
                "unsplit": ("/v1/predict?segment=single", single, SATURATION_CONNECTIONS),
                "canvas": ("/v1/predict", canvas, SATURATION_CONNECTIONS),
                "four": ("/v1/predict", single, 4),
                "noop_four": (NOOP, single, 4),
                "one": ("/v1/predict", single, 1),
                "batched": ("/v1/predict/batch", batch, 4),
            }
            # Every round measures every row in turn, so a slow spell of the shared machine
            # hits all rows of a round alike; ratios are taken within a round.
            runs: dict[str, list[Result]] = {name: [] for name in scenarios}
            for _ in range(args.rounds):
                for name, (path, body, connections) in scenarios.items():
                    runs[name].append(measure(path, body, connections))
            rss = worker_rss_mb(master.pid)

    def median(name: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs[name])

    def of_noop(name: str) -> str:
        ratios = [r.requests_per_s / n.requests_per_s
                  for r, n in zip(runs[name], runs["noop"], strict=True)]
        return f"{statistics.median(ratios):.0%} ({min(ratios):.0%}-{max(ratios):.0%})"

    errors = sum(r.errors for results in runs.values() for r in results)
    rate = {name: median(name, "requests_per_s") for name in runs}
    rows = [
        ("no-op POST (same body), saturated", f"{rate['noop']:,.0f} req/s", "", ""),
        ("/v1/predict, saturated", f"{rate['predict']:,.0f} req/s", of_noop("predict"),
         "≥ 80%"),
        ("/v1/predict?segment=single, saturated", f"{rate['unsplit']:,.0f} req/s",
         of_noop("unsplit"), ""),
        ("/v1/predict, 280x280 canvas PNG, saturated", f"{rate['canvas']:,.0f} req/s",
         of_noop("canvas"), ""),
        ("/v1/predict p50, 4 connections", f"{median('four', 'p50_ms'):.2f} ms",
         f"no-op {median('noop_four', 'p50_ms'):.2f} ms", "≤ 3 ms"),
        ("/v1/predict p50, 1 client", f"{median('one', 'p50_ms'):.2f} ms", "", "< 3 ms"),
        (f"/v1/predict/batch ({BATCH_SIZE} images), 4 connections",
         f"{rate['batched'] * BATCH_SIZE:,.0f} images/s", "", "≥ 5,000"),
        ("worker RSS", " / ".join(f"{mb:.0f} MB" for mb in rss), "", "< 120 MB"),
    ]
    print(f"\nserving: gunicorn, production settings ({len(rss)} workers), loopback, {client}; "
          f"median of {args.rounds} interleaved rounds of {args.duration:g} s per row (ratios: "
          f"median and range of the per-round ratios), {SATURATION_CONNECTIONS} connections "
          f"when saturated; load average {os.getloadavg()[0]:.2f} (the client and server "
          f"share the cores)")
    print(f"| {'measurement':<44} | {'result':>16} | {'ratio':>17} | {'goal':>8} |")
    print(f"|{'-' * 46}|{'-' * 17}:|{'-' * 18}:|{'-' * 9}:|")
    for name, value, extra, goal in rows:
        print(f"| {name:<44} | {value:>16} | {extra:>17} | {goal:>8} |")
    if errors:
        print(f"warning: {errors} failed requests during the runs")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
