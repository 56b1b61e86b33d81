"""The Dockerfile's contract, checked without a Docker engine (none on these machines)."""

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import tomllib

from ocr_service import serve
from ocr_testing import container_utils
from ocr_testing.server_utils import REPO, digit_png, running_server, save_variant, wait_until


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (REPO / "Dockerfile").read_text()
    logical, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            word, _, rest = current.strip().partition(" ")
            logical.append((word.upper(), rest.strip()))
        current = ""
    return logical


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _global_args() -> dict[str, str]:
    """Default values of the ``ARG``s before the first ``FROM`` (those ``FROM`` may use)."""
    defaults = {}
    for word, args in _instructions():
        if word == "FROM":
            break
        if word == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name.strip()] = value.strip()
    return defaults


def _final(name: str) -> list[str]:
    return [args for word, args in _stages()[-1] if word == name]


def test_pinned_slim_python_311_base_in_every_stage_unless_overridden():
    stages = _stages()
    assert len(stages) >= 2, "multi-stage build expected"
    bases = {stage[0][1].split()[0] for stage in stages}
    assert bases == {"${BASE}"}, "every stage starts from the BASE build argument"
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", _global_args()["BASE"])


def test_no_compilers_or_build_tree_in_the_final_image():
    runs = " ".join(_final("RUN"))
    for tool in ("gcc", "g++", "build-essential", "make ", "apt-get install"):
        assert tool not in runs
    for copy in _final("COPY"):
        assert "ocr_service" not in copy, "the final stage installs the wheel, not the source"


def test_install_builds_from_this_pyproject():
    builder = _stages()[0]
    copies = " ".join(args for word, args in builder if word == "COPY")
    assert "pyproject.toml" in copies
    assert any("pip wheel" in args and args.rstrip().endswith(" .") for w, args in builder
               if w == "RUN")  # fmt: skip
    name = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"]
    install = [args.split("&&")[0] for args in _final("RUN") if "pip install" in args]
    assert install and "--no-index" in install[0] and install[0].split()[-1] == name


def _ignored(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/"))
               for p in patterns)  # fmt: skip


def test_every_copy_source_exists_and_is_in_the_build_context():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]  # fmt: skip
    assert {".git", ".venv"} <= set(patterns)
    for word, args in _instructions():
        if word != "COPY" or "--from" in args:
            continue
        sources = [a for a in shlex.split(args) if not a.startswith("--")][:-1]
        for source in sources:
            assert (REPO / source).exists(), f"COPY source {source} missing"
            assert not _ignored(source.rstrip("/"), patterns), f"{source} is in .dockerignore"


def test_non_root_user_port_model_volume_and_command():
    users = _final("USER")
    assert users and users[-1] not in ("root", "0")
    assert "8000" in _final("EXPOSE")
    env = " ".join(_final("ENV"))
    model_path = re.search(r"OCR_MODEL_PATH=(\S+)", env).group(1)
    model_dir = model_path.rsplit("/", 1)[0]
    assert any(args.endswith(f" {model_dir}/") and "models/" in args for args in _final("COPY"))
    assert model_dir in json.loads(_final("VOLUME")[0])
    assert re.search(r"(^|\s)OCR_HOST=0\.0\.0\.0(\s|$)", env)
    cmd = json.loads(_final("CMD")[0])
    assert cmd[0] == "ocr-serve"
    args = serve._parser().parse_args(cmd[1:])
    assert args.host is None and args.port is None, "-e OCR_HOST / OCR_PORT must take effect"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["ocr-serve"] == "ocr_service.serve:main"


def _healthcheck_command() -> list[str]:
    (health,) = _final("HEALTHCHECK")
    assert "/healthz" in health
    return json.loads(health[health.index("CMD") + 3:].strip())


@pytest.mark.e2e
def test_healthcheck_command_passes_on_a_live_server_and_fails_without_one(
    small_model_path, tmp_path
):
    command = _healthcheck_command()
    assert command[0] == "python" and "curl" not in command and "wget" not in command
    run = [sys.executable, *command[1:]]
    with running_server(small_model_path, tmp_path, workers=1) as srv:
        port = srv.url.rsplit(":", 1)[1]
        assert subprocess.run(run, env={"OCR_PORT": port}, timeout=10).returncode == 0
    assert subprocess.run(run, env={"OCR_PORT": port}, capture_output=True,
                          timeout=10).returncode != 0  # fmt: skip


# --- the image built and run by podman (see container_utils for the stand-in base) ---

TOKEN = "container-admin-token"


@pytest.fixture(scope="module")
def image() -> str:
    """The image, built once per session; skipped only where no engine can be installed."""
    reason = container_utils.engine_missing()
    if reason:
        pytest.skip(reason)
    return container_utils.built_image()


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.container
def test_image_reads_a_digit_as_non_root_is_healthy_and_stops_cleanly_on_sigterm(image):
    grace = 20
    with container_utils.running_container(
        "ocr-test-shipped", env={"OCR_GRACEFUL_TIMEOUT": str(grace)}
    ) as box:
        assert requests.get(box.url + "/readyz", timeout=5).status_code == 200
        for digit in ("1", "0"):
            answer = requests.post(box.url + "/v1/predict", data=digit_png(digit),
                                   headers={"Content-Type": "image/png"}, timeout=10)  # fmt: skip
            assert answer.status_code == 200 and answer.json()["text"] == digit
        pids = box.pids()
        assert len(pids) >= 3, "the gunicorn master and its workers"
        uids = {container_utils.proc_status(pid, "Uid").split()[0] for pid in pids}
        assert "0" not in uids, f"a process of the container runs as root: {uids}"
        health = container_utils.podman("healthcheck", "run", box.name, check=False)
        assert health.returncode == 0, health.stdout + health.stderr
        assert box.inspect(".State.Healthcheck.Status") == "healthy"

        # a large upload in flight when SIGTERM arrives still gets its answer
        statuses: list[int] = []
        upload = threading.Thread(target=lambda: statuses.append(requests.post(
            box.url + "/v1/predict", data=digit_png("1", size=4000), timeout=60,
            headers={"Content-Type": "image/png"}).status_code))  # fmt: skip
        upload.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        container_utils.podman("stop", "--time", str(grace + 5), box.name, timeout=grace + 30)
        stopped_in = time.monotonic() - t0
        upload.join()
        print(f"\nSIGTERM to stopped: {stopped_in:.1f} s (grace {grace} s)")
        assert statuses == [200] and stopped_in < grace
        assert box.inspect(".State.ExitCode") == "0", box.logs()
        assert "Shutting down: Master" in box.logs()


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.container
def test_runtime_layer_has_no_build_tree_caches_or_training_extras(image):
    root = Path(container_utils.podman("image", "mount", image).stdout.strip())
    try:
        (site,) = root.glob("usr/local/lib/python3*/*-packages")
        installed = {p.name.lower().split("-")[0] for p in site.iterdir()}
        assert {"ocr_service", "numpy", "cv2", "flask", "gunicorn"} <= installed
        # scipy only augments training data
        extras = {"sklearn", "scikit_learn", "numba", "llvmlite", "matplotlib", "mlxtend", "tqdm",
                  "scipy"}
        assert not installed & extras
        assert not list(site.rglob("tests")), "the dependencies' test suites are dropped"
        for leftover in ("src", "wheels", "root/.cache", "usr/bin/gcc", "usr/bin/cc"):
            path = root / leftover
            assert not path.exists() or not any(path.iterdir()), leftover
    finally:
        container_utils.podman("image", "unmount", image, check=False)


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.container
def test_mounted_models_volume_is_served_and_admin_reload_swaps_it(
    image, small_model_path, tmp_path
):
    models = tmp_path / "models"
    models.mkdir(mode=0o755)
    models.chmod(0o755)  # read by the container's unprivileged user
    first = save_variant(small_model_path, models / "default", "volume-model")
    options = ["--volume", f"{models}:/models:ro"]
    with container_utils.running_container(
        "ocr-test-volume", env={"OCR_ADMIN_TOKEN": TOKEN}, options=options
    ) as box:
        served = requests.get(box.url + "/v1/model", timeout=5).json()
        assert (served["name"], served["version"]) == ("volume-model", first)
        answer = requests.post(box.url + "/v1/predict", data=digit_png("1", size=32),
                               headers={"Content-Type": "image/png"}, timeout=10)  # fmt: skip
        assert answer.json()["model"]["version"] == first

        second = save_variant(models / "default", models / "default", "volume-model")
        assert second != first
        forbidden = requests.post(box.url + "/v1/admin/reload", timeout=30,
                                  headers={"Authorization": "Bearer wrong"})  # fmt: skip
        assert forbidden.status_code == 403
        reload = requests.post(box.url + "/v1/admin/reload", timeout=30,
                               headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        assert reload.status_code == 200, reload.text

        def serves_second() -> bool:
            return requests.get(box.url + "/v1/model", timeout=5).json()["version"] == second

        assert wait_until(serves_second, 30, interval=0.2), box.logs()
        sha = json.loads((models / "default.json").read_text())["sha256"]
        metrics = requests.get(box.url + "/metrics", timeout=5).text
        live = [line for line in metrics.splitlines()
                if line.startswith("ocr_model_info{") and line.endswith(" 1.0")]  # fmt: skip
        assert any(f'sha256="{sha}"' in line and f'version="{second}"' in line for line in live)
