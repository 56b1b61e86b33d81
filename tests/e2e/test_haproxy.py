"""deploy/haproxy/haproxy.cfg: three ``ocr-serve`` replicas behind HAProxy act as one service.

Under steady, bounded load on loopback, a new model rolled across the replicas one at a time
and a replica killed with SIGKILL both cost clients no request: HAProxy health-checks
``/readyz`` and sends a failed prediction again to another replica. Each test prints requests
per replica and p50/p99 before, during and after its event (figures in docs/deployment.md).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from ocr_testing.load_client import LoadGenerator, LoadStats
from ocr_testing.server_utils import REPO, digit_png, free_port, is_ready, save_variant, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("haproxy") is None,
                       reason="haproxy is not installed (.ci/run installs Debian's haproxy)"),
]  # fmt: skip

CONFIG = REPO / "deploy" / "haproxy" / "haproxy.cfg"
TOKEN = "replica-admin-token"
NAMES = ("r1", "r2", "r3")
SETTLE = 3.0  # seconds of load measured before and after each event


class Replica:
    """One ``ocr-serve`` (gunicorn master + 1 worker) in a process group of its own."""

    def __init__(self, name: str, model: Path, log: Path) -> None:
        self.name, self.model, self.log = name, model, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OCR_ACCESS_LOG": "",
               "OCR_ADMIN_TOKEN": TOKEN}  # fmt: skip
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ocr_service.serve", "--host", "127.0.0.1",
                 "--port", str(self.port), "--model", str(self.model), "--workers", "1"],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        if not wait_until(self.ready, 30, interval=0.1):
            raise RuntimeError(f"{self.name} not ready:\n{self.log.read_text()}")

    def ready(self) -> bool:
        return is_ready(self.url)

    def serves_only(self, sha256: str) -> bool:
        """Every live process of the replica serves the model with this sha256 (the metric)."""
        text = requests.get(self.url + "/metrics", timeout=5).text
        live = [line for line in text.splitlines()
                if line.startswith("ocr_model_info{") and line.endswith(" 1.0")]  # fmt: skip
        return bool(live) and all(f'sha256="{sha256}"' in line for line in live)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


class Balancer:
    """HAProxy with the shipped configuration, and its admin socket."""

    def __init__(self, replicas: list[Replica], tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.socket = tmp / "haproxy.sock"
        self.log = tmp / "haproxy.log"
        env = {**os.environ, "OCR_LB_BIND": f"127.0.0.1:{self.port}",
               "OCR_LB_SOCKET": str(self.socket)}  # fmt: skip
        for i, replica in enumerate(replicas, 1):
            env[f"OCR_REPLICA_{i}"] = f"127.0.0.1:{replica.port}"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(["haproxy", "-f", str(CONFIG), "-db"], env=env,
                                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        if not wait_until(lambda: self.socket.exists() and self.all_up(), 15, interval=0.1):
            raise RuntimeError(f"haproxy did not come up:\n{self.log.read_text()}")

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the backend's servers, by name."""
        rows = csv.DictReader(self.command("show stat").lstrip("# ").splitlines())
        return {r["svname"]: r for r in rows if r["pxname"] == "replicas" and r["svname"] in NAMES}

    def all_up(self) -> bool:
        try:
            return all(s["status"] == "UP" for s in self.servers().values())
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(small_model_path, tmp_path_factory):
    """Three replicas of one model, each with its own copy (as on separate machines)."""
    tmp = tmp_path_factory.mktemp("replicas")
    replicas = []
    try:
        for name in NAMES:
            (tmp / name).mkdir()
            model = tmp / name / "model"
            save_variant(small_model_path, model, "replica-model")
            replicas.append(Replica(name, model, tmp / f"{name}.log"))
            replicas[-1].start()
        balancer = Balancer(replicas, tmp)
        try:
            yield balancer, replicas, tmp
        finally:
            balancer.stop()
    finally:
        for replica in replicas:
            replica.stop()


def _load(balancer: Balancer) -> LoadGenerator:
    # bounded: 3 clients, each pausing 10 ms between requests, for at most 2 minutes
    return LoadGenerator(balancer.url, digit_png("1", size=28), threads=3, pause=0.01,
                         max_seconds=120, max_requests=60000)  # fmt: skip


def _report(title: str, stats: LoadStats, marks: list[tuple[str, float]]) -> dict[str, Counter]:
    """Print requests per replica and p50/p99 per phase; return the replicas' counts per phase."""
    print(f"\n{title}: phase, seconds, requests, per replica, p50 ms, p99 ms, failed")
    counts = {}
    for (phase, start), (_, end) in itertools.pairwise(marks):
        window = [s for s in stats.samples if start <= s[0] < end]
        latencies = sorted(s[1] for s in window if s[2])
        per_replica = Counter(s[4] for s in window if s[2])
        counts[phase] = per_replica

        def pct(q: float, ordered: list[float] = latencies) -> float:
            return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

        replicas = " ".join(f"{n}={per_replica[n]}" for n in NAMES)
        failed = sum(1 for s in window if not s[2])
        print(f"  {phase:<7} {end - start:5.1f} {len(window):6d}  {replicas}  "
              f"{pct(0.50):6.1f} {pct(0.99):6.1f}  {failed}")
    return counts


def _install(source: Path, target: Path) -> None:
    """Put the artifact at ``source`` in place of ``target``'s, weights first, atomically."""
    for suffix in (".npz", ".json"):
        staging = target.with_name(f".{target.name}{suffix}.new")
        shutil.copyfile(source.with_suffix(suffix), staging)
        os.replace(staging, target.with_suffix(suffix))


def test_rolling_model_swap_one_replica_at_a_time_fails_no_request(cluster):
    balancer, replicas, tmp = cluster
    (tmp / "new").mkdir()
    new = tmp / "new" / "model"
    version = save_variant(replicas[0].model, new, "replica-model")
    sha256 = json.loads(new.with_suffix(".json").read_text())["sha256"]
    with _load(balancer) as load:
        marks = [("before", time.monotonic())]
        time.sleep(SETTLE)
        marks.append(("during", time.monotonic()))
        for replica in replicas:
            balancer.command(f"set server replicas/{replica.name} state maint")
            assert wait_until(lambda r=replica: balancer.servers()[r.name]["scur"] == "0", 10)
            _install(new, replica.model)
            reload = requests.post(replica.url + "/v1/admin/reload", timeout=30,
                                   headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
            assert reload.status_code == 200, reload.text
            # ready, and no process of the replica still serves the old model
            assert wait_until(lambda r=replica: r.ready() and r.serves_only(sha256), 30, 0.1)
            balancer.command(f"set server replicas/{replica.name} state ready")
            assert wait_until(lambda r=replica: balancer.servers()[r.name]["status"] == "UP", 10)
        marks.append(("after", time.monotonic()))
        time.sleep(SETTLE)
        marks.append(("end", time.monotonic()))
        stats = load.stop()
    counts = _report("rolling model swap", stats, marks)
    assert stats.failures == [] and set(stats.statuses) == {200}, stats.failures[:5]
    assert sum(stats.versions.values()) == stats.statuses[200], "every answer names its model"
    after = {s[3] for s in stats.samples if s[0] >= marks[2][1]}
    assert after == {version}, "after the rollout only the new model answers"
    assert all(counts["after"][n] > 0 for n in NAMES), counts["after"]


def test_replica_killed_mid_load_costs_no_request_and_rejoins(cluster):
    balancer, replicas, _ = cluster
    victim = replicas[1]

    def retried() -> int:  # HAProxy's counters of connection retries and redispatches
        return sum(int(s["wretr"]) + int(s["wredis"]) for s in balancer.servers().values())

    retried_before = retried()
    with _load(balancer) as load:
        marks = [("before", time.monotonic())]
        time.sleep(SETTLE)
        marks.append(("during", time.monotonic()))
        victim.kill()
        assert wait_until(lambda: balancer.servers()[victim.name]["status"] != "UP", 10)
        victim.start()
        assert wait_until(lambda: balancer.servers()[victim.name]["status"] == "UP", 15)
        marks.append(("after", time.monotonic()))
        time.sleep(SETTLE)
        marks.append(("end", time.monotonic()))
        stats = load.stop()
    counts = _report(f"kill -9 of {victim.name}", stats, marks)
    assert stats.failures == [] and set(stats.statuses) == {200}, stats.failures[:5]
    assert counts["before"][victim.name] > 0
    assert counts["after"][victim.name] > 0, "the restarted replica is back in rotation"
    print(f"  HAProxy retries + redispatches meanwhile: {retried() - retried_before}")
