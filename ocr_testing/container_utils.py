"""Helpers for the container tests: podman with the project's settings, a stand-in base image
made from Debian packages (cached in podman's storage), the image built from the Dockerfile,
and a container run on a loopback port.

These machines have no Docker daemon and cannot pull from a registry, so the base image is
bootstrapped from Debian's ``python3`` with the host's CA certificates and pip configuration,
letting ``pip`` inside the build reach the same package index as the host.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ocr_service.config import default_workers
from ocr_testing.server_utils import REPO, free_port, is_ready, wait_until

__all__ = [
    "IMAGE",
    "Container",
    "build_image",
    "built_image",
    "engine_missing",
    "ensure_base",
    "image_size",
    "podman",
    "proc_status",
    "running_container",
]

ENGINE_CONF = REPO / "tests" / "containers.conf"
IMAGE = "localhost/ocr-service:test"
_PACKAGES = "python3,python3-pip,python3-venv,python-is-python3"
# The host files the base carries, so pip inside the build trusts and configures as the host's.
_HOST_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf", "/etc/xdg/pip")
_RECIPE = "1"  # bump when the base's recipe below changes, so the cached image is rebuilt


def _which(tool: str) -> str | None:
    """``tool`` on PATH or in the sbin directories (debootstrap lives there)."""
    return shutil.which(tool, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin",
                                                    "/sbin"]))  # fmt: skip


def engine_missing() -> str | None:
    """Why the container tests cannot run here, or None when they can."""
    for tool in ("podman", "debootstrap"):
        if _which(tool) is None:
            return (f"{tool} is not installed (.ci/run installs podman buildah runc "
                    "debootstrap from Debian)")  # fmt: skip
    if os.geteuid() != 0:
        return "the stand-in base image is bootstrapped with debootstrap, which needs root"
    return None


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``podman ARGS`` with the project's containers.conf; output captured as text."""
    env = {**os.environ, "CONTAINERS_CONF": str(ENGINE_CONF)}
    result = subprocess.run(["podman", *args], env=env, capture_output=True, text=True,
                            timeout=timeout)  # fmt: skip
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def _host_files() -> list[Path]:
    found: list[Path] = []
    for name in _HOST_FILES:
        path = Path(name)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            found.append(path)
    return found


def _base_tag() -> str:
    digest = hashlib.sha256(f"{_RECIPE} {_PACKAGES}".encode())
    for path in _host_files():
        digest.update(str(path).encode() + b"\0" + path.read_bytes())
    return f"localhost/ocr-standin-base:bookworm-{digest.hexdigest()[:12]}"


def _debian_mirror() -> str:
    """The host's Debian mirror (deb822 sources), else deb.debian.org."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and line.split()[1].rstrip("/").endswith("/debian"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def ensure_base() -> tuple[str, float]:
    """The stand-in base image's tag, built unless cached; and the seconds building took."""
    tag = _base_tag()
    if podman("image", "exists", tag, check=False).returncode == 0:
        return tag, 0.0
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ocr-base-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "root"
        subprocess.run(
            [_which("debootstrap"), "--variant=minbase", f"--include={_PACKAGES}", "bookworm",
             str(root), _debian_mirror()],
            check=True, capture_output=True, timeout=900,
        )  # fmt: skip
        for path in _host_files():
            target = root / path.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)  # the bundle is a file Debian generates: replace it
            shutil.copyfile(path, target)
        # like the python images: pip installs into the system, nothing cached
        for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        for junk in ("var/lib/apt/lists", "var/cache/apt", "var/cache/debconf", "var/log"):
            shutil.rmtree(root / junk, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        env = {**os.environ, "CONTAINERS_CONF": str(ENGINE_CONF)}
        subprocess.run(
            ["podman", "import", "--change", 'CMD ["python3"]', "-", tag],
            stdin=tar.stdout, env=env, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        tar.wait()
    return tag, time.monotonic() - t0


def build_image(base: str, tag: str = IMAGE) -> float:
    """Build the Dockerfile on ``base`` as ``tag`` (docker format keeps HEALTHCHECK); seconds."""
    def dangling() -> set[str]:
        return set(podman("images", "--quiet", "--filter", "dangling=true").stdout.split())

    before = dangling()
    t0 = time.monotonic()
    # no layer cache: podman 4.3 fails to bind-mount a cached stage (RUN --mount from=builder);
    # no intermediate images either, so nothing is left behind but the image
    podman("build", "--no-cache", "--layers=false", "--format", "docker", "--network", "host",
           "--build-arg", f"BASE={base}", "--tag", tag, str(REPO), timeout=900)  # fmt: skip
    seconds = time.monotonic() - t0
    leftovers = dangling() - before  # the builder stage and the previous build of ``tag``
    if leftovers:
        podman("rmi", "--force", *leftovers, check=False)
    return seconds


def image_size(tag: str = IMAGE) -> int:
    """The image's size in bytes, as the engine reports it."""
    return int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


@functools.cache
def built_image() -> str:
    """Build the image once per test session (base cached across runs); print the figures."""
    base, base_seconds = ensure_base()
    build_seconds = build_image(base)
    size, base_size = image_size(), image_size(base)
    cached = "cached" if not base_seconds else f"built in {base_seconds:.0f} s"
    print(f"\nstand-in base {base} {cached}; image built in {build_seconds:.0f} s: "
          f"{size / 1e6:.0f} MB, of which the service's layers {(size - base_size) / 1e6:.0f} MB")
    return IMAGE


@dataclass
class Container:
    """A running container: ``name`` for the engine, ``url`` of its loopback port."""

    name: str
    url: str

    def inspect(self, field: str) -> str:
        return podman("inspect", "--format", "{{" + field + "}}", self.name).stdout.strip()

    def pids(self) -> list[int]:
        """Host PIDs of the container's main process and all its descendants."""
        found, todo = [], [int(self.inspect(".State.Pid"))]
        while todo:
            pid = todo.pop()
            found.append(pid)
            children = Path(f"/proc/{pid}/task/{pid}/children")
            todo += [int(c) for c in children.read_text().split()] if children.exists() else []
        return found

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr


def proc_status(pid: int, field: str) -> str:
    """One field of ``/proc/PID/status`` (e.g. ``Uid``, ``VmHWM``), as text."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(field)


@contextlib.contextmanager
def running_container(
    name: str,
    *,
    env: dict[str, str] | None = None,
    options: Sequence[str] = (),
    image: str = IMAGE,
    timeout: float = 60.0,
) -> Iterator[Container]:
    """Run ``image`` with its own command on a free 127.0.0.1 port until the block exits.

    The container shares the host's network namespace and binds loopback only (OCR_HOST),
    so no traffic leaves 127.0.0.0/8; its root filesystem is read-only, as on Kubernetes.
    """
    port = free_port()
    settings = {"OCR_HOST": "127.0.0.1", "OCR_PORT": str(port), **(env or {})}
    podman("rm", "--force", "--time", "0", name, check=False)
    args = ["run", "--detach", "--name", name, "--network", "host", "--read-only"]
    for key, value in settings.items():
        args += ["--env", f"{key}={value}"]
    podman(*args, *options, image)
    container = Container(name, f"http://127.0.0.1:{port}")
    try:
        if not wait_until(lambda: is_ready(container.url), timeout, interval=0.2):
            raise RuntimeError(f"container {name} not ready in {timeout}s:\n{container.logs()}")
        # one worker answering is not all of them: the tests look at every process
        workers = int(settings.get("OCR_WORKERS") or default_workers())
        if not wait_until(lambda: len(container.pids()) == 1 + workers, timeout):
            raise RuntimeError(f"{workers} workers did not start:\n{container.logs()}")
        yield container
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
