"""gunicorn settings and hooks of the service (``ocr-serve`` passes this module to gunicorn).

It lives inside the package so an installed copy (the Docker image) has it; the checkout's
``gunicorn.conf.py`` re-exports it. Values come from ``ocr_service.config`` (``OCR_*``).

Process model: the app and its model are loaded once in the master (``preload_app``) and
the workers fork from it, sharing the weights' pages. ``kill -HUP <master>`` reloads the
model in the master, then gunicorn replaces every worker gracefully; a model that fails to
load leaves the previous one serving. ``POST /v1/admin/reload`` ends in the same HUP.
"""

from __future__ import annotations

import os

# One BLAS thread per worker: set before numpy is first imported in this process, since two
# workers each running a 2-thread BLAS on 2 cores collapse small-GEMM speed (docs/serving.md).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import glob  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402

from ocr_service.access_log import ACCESS_LOG_FORMAT  # noqa: E402  (gunicorn only)
from ocr_service.config import load_settings  # noqa: E402  (stdlib only: numpy not loaded yet)

__all__ = [
    "access_log_format",
    "accesslog",
    "bind",
    "child_exit",
    "control_socket_disable",
    "errorlog",
    "graceful_timeout",
    "keepalive",
    "logger_class",
    "max_requests",
    "max_requests_jitter",
    "on_exit",
    "on_reload",
    "on_starting",
    "post_fork",
    "preload_app",
    "proc_name",
    "threads",
    "timeout",
    "when_ready",
    "worker_class",
    "worker_tmp_dir",
    "workers",
    "wsgi_app",
]

_SHM = "/dev/shm"
_shm = _SHM if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK) else None

# Prometheus multiprocess mode must be chosen before prometheus_client is imported (by the
# app, after this file): every process then writes its samples under this directory.
_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def _sweep_dead_metrics_dirs(parent: str) -> None:
    """Remove the directories of past masters that died without ``on_exit`` (SIGKILL)."""
    for path in glob.glob(os.path.join(parent, "ocr-metrics-*-*")):
        pid = os.path.basename(path).split("-")[2]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(path, ignore_errors=True)


if _OWN_METRICS_DIR:
    _sweep_dead_metrics_dirs(_shm or tempfile.gettempdir())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
        prefix=f"ocr-metrics-{os.getpid()}-", dir=_shm
    )
else:
    # A configured directory may hold a past run's samples, which would be summed with ours:
    # clear it now, before the preloaded app (this master) writes its own.
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    for _stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.unlink(_stale)

_settings = load_settings()

wsgi_app = "ocr_service.app:create_app()"
proc_name = "ocr-serve"
_host = f"[{_settings.host}]" if ":" in _settings.host else _settings.host
bind = [f"{_host}:{_settings.port}"]
workers = _settings.worker_count
# gthread that accepts only while it has a free thread, so connections are shared out evenly
worker_class = "ocr_service.gunicorn_worker.BalancedThreadWorker"
threads = _settings.threads
timeout = _settings.timeout
graceful_timeout = _settings.graceful_timeout
keepalive = 5
max_requests = _settings.max_requests
max_requests_jitter = max(1, _settings.max_requests // 10) if _settings.max_requests else 0
preload_app = True
# The heartbeat file is touched every second; keep it off disk.
worker_tmp_dir = _shm
accesslog = _settings.access_log or None
access_log_format = ACCESS_LOG_FORMAT
logger_class = "ocr_service.access_log.AccessLogger"  # the same lines, written more cheaply
errorlog = "-"
# gunicorn's control socket defaults to one path per user: parallel servers would collide.
control_socket_disable = True


def _ocr_service(server):
    """The Service of the (preloaded) Flask app in this process."""
    return server.app.wsgi().extensions["ocr"]


def on_starting(server) -> None:
    """Master, once: the service logs through gunicorn's error log."""
    service_log = logging.getLogger("ocr_service")
    service_log.handlers = list(server.log.error_log.handlers)
    service_log.setLevel(logging.INFO)
    service_log.propagate = False
    holder = _ocr_service(server).holder  # preloaded before this hook ran, so say it now
    service_log.info("model %s: %s", holder.path, holder.last_reload)


#: Seconds a new TCP connection may stay silent in the kernel before a worker accepts it
#: (Linux ``TCP_DEFER_ACCEPT``, nginx's ``listen ... deferred``; Linux rounds it up to its
#: SYN-ACK retransmission schedule, here 31 s). gunicorn hands every accepted
#: connection to a request thread, which then waits up to 5 s for its first bytes: a browser's
#: unused preconnect, or a client that connects and never speaks, would hold a thread and, with
#: every thread of a worker held, keep the worker from accepting. Deferred, such a connection
#: costs no thread; one that speaks is accepted at once, with its request already there.
#: Browsers close unused preconnects after about 10 s, well within this.
DEFER_ACCEPT_SECONDS = 30


def _defer_accept(server) -> None:
    """Set ``DEFER_ACCEPT_SECONDS`` on the TCP listeners (where the platform has it)."""
    option = getattr(socket, "TCP_DEFER_ACCEPT", None)
    if option is None:
        return
    for listener in server.LISTENERS:
        if listener.sock.family in (socket.AF_INET, socket.AF_INET6):
            listener.sock.setsockopt(socket.IPPROTO_TCP, option, DEFER_ACCEPT_SECONDS)


def when_ready(server) -> None:
    """Master, once its listeners exist and before the first worker forks."""
    _defer_accept(server)


def on_reload(server) -> None:
    """Master, on SIGHUP, before the new workers fork: load the model from disk again."""
    _ocr_service(server).holder.try_reload()


def post_fork(server, worker) -> None:
    """Worker, after fork: know the master to signal, announce the model in the metrics."""
    holder = _ocr_service(server).holder
    holder.master_pid = server.pid
    holder.publish()


def child_exit(server, worker) -> None:
    from ocr_service.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def on_exit(server) -> None:
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
