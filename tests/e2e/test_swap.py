"""Model swaps under load never cost a request; broken artifacts are refused; a killed save
leaves the previous model loadable.

A real gunicorn (2 workers) serves while a bounded keep-alive load generator posts images
(paced to leave ``ocr-train`` some of the 2 cores).
``ocr-train`` writes new artifacts over the served one; ``POST /v1/admin/reload`` and then
``kill -HUP <master>`` switch every worker. A corrupt and a half-written artifact are refused
by both paths while the last good model keeps serving. Every request of the whole run must be
answered 200.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ocr_service.model_store import load_model
from ocr_testing.load_client import LoadGenerator
from ocr_testing.server_utils import REPO, digit_png, running_server, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

TOKEN = "swap-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SWITCH_SECONDS = 30.0


def _train_command(out: Path, seed: int) -> list[str]:
    """``ocr-train``: a small digits model in ~2 s."""
    return [sys.executable, "-m", "ocr_service.cli", "train", "--dataset", "digits",
            "--epochs", "3", "--hidden", "32", "--patience", "0", "--quiet",
            "--seed", str(seed), "--out", str(out)]  # fmt: skip


def _train(out: Path, seed: int) -> str:
    """Run ``ocr-train`` to completion; the new artifact's version."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(_train_command(out, seed), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(out.with_suffix(".json").read_text())["version"]


def _fresh_version(server) -> str:
    """The served version as seen on a new connection (so calls spread over the workers)."""
    return server.get("/v1/model", headers={"Connection": "close"}).json()["version"]


def _everywhere(server, version: str, old_workers: set[int]) -> bool:
    """Every worker of ``old_workers`` has exited and 8 fresh requests all see ``version``."""
    if server.worker_pids() & old_workers:
        return False
    return all(_fresh_version(server) == version for _ in range(8))


def _refused_everywhere(server, version: str) -> None:
    """A broken artifact on disk: both reload paths refuse it; ``version`` keeps serving."""
    response = server.post("/v1/admin/reload", headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "reload_failed"
    workers = server.worker_pids()
    os.kill(server.process.pid, signal.SIGHUP)
    assert wait_until(lambda: _everywhere(server, version, workers), SWITCH_SECONDS)
    for _ in range(4):  # every (new) worker reports the refused load, and is still ready
        info = server.get("/v1/model", headers={"Connection": "close"}).json()
        assert info["version"] == version
        assert (
            info["last_reload"]["ok"] is False
            and "cannot load model" in (info["last_reload"]["error"])
        )
        ready = server.get("/readyz", headers={"Connection": "close"})
        assert ready.status_code == 200
        assert ready.json()["model"]["version"] == version
        assert ready.json()["last_reload"]["ok"] is False


def test_swaps_under_load_lose_no_request(small_model_path, tmp_path):
    model = tmp_path / "served"
    for suffix in (".npz", ".json"):
        shutil.copy(small_model_path + suffix, str(model) + suffix)
    v1 = load_model(model).version
    env = {"OCR_ADMIN_TOKEN": TOKEN, "OCR_MAX_REQUESTS": "0"}
    with (
        running_server(model, tmp_path, env=env, workers=2) as server,
        LoadGenerator(server.url, digit_png("0"), threads=3, pause=0.005, max_seconds=120) as load,
    ):
        assert wait_until(lambda: load.stats().requests > 200, 20)

        # 1. retrain over the served artifact, then the admin route switches every worker
        v2 = _train(model, seed=1)
        assert v2 != v1
        workers = server.worker_pids()
        response = server.post("/v1/admin/reload", headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.json()["model"]["version"] == v2
        assert wait_until(lambda: _everywhere(server, v2, workers), SWITCH_SECONDS)

        # 2. retrain again, then SIGHUP to the master switches every worker
        v3 = _train(model, seed=2)
        workers = server.worker_pids()
        os.kill(server.process.pid, signal.SIGHUP)
        assert wait_until(lambda: _everywhere(server, v3, workers), SWITCH_SECONDS)
        good = {p: p.read_bytes() for p in (model.with_suffix(".npz"), model.with_suffix(".json"))}

        # 3. a corrupt artifact: the JSON's checksum does not match the weights
        meta = json.loads(good[model.with_suffix(".json")])
        meta["sha256"] = hashlib.sha256(b"something else").hexdigest()
        model.with_suffix(".json").write_text(json.dumps(meta))
        _refused_everywhere(server, v3)

        # 4. a half-written artifact: a valid JSON pointing at truncated weights
        model.with_suffix(".json").write_bytes(good[model.with_suffix(".json")])
        npz = good[model.with_suffix(".npz")]
        model.with_suffix(".npz").write_bytes(npz[: len(npz) // 2])
        _refused_everywhere(server, v3)

        assert wait_until(lambda: load.stats().versions[v3] > 200, 20)
        stats = load.stop()
    print(f"\nswaps under load: {stats.requests} requests, {len(stats.failures)} failed, "
          f"statuses {dict(stats.statuses)}, versions served {dict(stats.versions)}")  # fmt: skip
    assert stats.failures == []
    assert set(stats.statuses) == {200}
    assert set(stats.versions) == {v1, v2, v3}
    assert "Traceback" not in server.log()


def _slow_fsync_train(out: Path, seed: int) -> subprocess.Popen:
    """``ocr-train`` whose fsyncs take 0.3 s, so each phase of the save is long enough to hit."""
    code = ("import os, sys, time\n"
            "real = os.fsync\n"
            "os.fsync = lambda fd: (time.sleep(0.3), real(fd))[1]\n"
            "from ocr_service.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")  # fmt: skip
    cmd = [sys.executable, "-c", code, *_train_command(out, seed)[3:]]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def _kill_when_written(process: subprocess.Popen, directory: Path, prefix: str) -> None:
    """SIGKILL ``process`` while a temporary file named ``prefix*.tmp`` exists."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if any(p.name.startswith(prefix) for p in directory.glob("*.tmp")):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.005)
    raise AssertionError(f"ocr-train ended (rc {process.poll()}) before writing {prefix}*.tmp")


#: while the new weights are written, and after they replaced the old ones but before the JSON
@pytest.mark.parametrize("phase", [".model.npz.", ".model.json."])
def test_sigkill_during_save_leaves_the_previous_model_loadable(small_model_path, tmp_path, phase):
    model = tmp_path / "model"
    for suffix in (".npz", ".json"):
        shutil.copy(small_model_path + suffix, str(model) + suffix)
    before = load_model(model).version
    _kill_when_written(_slow_fsync_train(model, seed=3), tmp_path, phase)
    assert load_model(model).version == before
