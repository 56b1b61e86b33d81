"""The Dockerfile's contract, checked without a Docker engine (none on these machines)."""

import fnmatch
import json
import re
import shlex
import subprocess
import sys

import pytest
import tomllib
from server_utils import REPO, running_server

from ocr_service import serve


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


def _final(name: str) -> list[str]:
    return [args for word, args in _stages()[-1] if word == name]


def test_pinned_slim_python_311_base_in_every_stage():
    stages = _stages()
    assert len(stages) >= 2, "multi-stage build expected"
    bases = [stage[0][1].split()[0] for stage in stages]
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base
    assert len(set(bases)) == 1


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
    install = [args for args in _final("RUN") if "pip install" in args]
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
    cmd = json.loads(_final("CMD")[0])
    assert cmd[0] == "ocr-serve"
    args = serve._parser().parse_args(cmd[1:])
    assert args.host == "0.0.0.0"
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
