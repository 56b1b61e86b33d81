"""``ocr-serve`` and the gunicorn configuration it hands to gunicorn."""

import json
import os
import subprocess
import sys

import pytest

from ocr_service import serve
from ocr_testing.server_utils import REPO


@pytest.fixture
def exec_calls(monkeypatch):
    """Capture ``os.execv`` instead of replacing the test process; isolate OCR_* changes."""
    for key in [k for k in os.environ if k.startswith("OCR_")]:
        monkeypatch.delenv(key)
    for key in ("OCR_HOST", "OCR_PORT", "OCR_WORKERS", "OCR_MODEL_PATH"):
        monkeypatch.setenv(key, "")  # so monkeypatch restores whatever main() sets
    calls = []
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append((path, argv)))
    return calls


def test_options_become_environment_and_gunicorn_runs_the_packaged_config(
    exec_calls, small_model_path, capsys
):
    serve.main(["--host", "0.0.0.0", "--port", "8123", "--workers", "3",
                "--model", small_model_path])  # fmt: skip
    assert exec_calls == [(sys.executable, serve.gunicorn_command())]
    assert exec_calls[0][1][-2:] == ["--config", "python:ocr_service.gunicorn_config"]
    assert (os.environ["OCR_HOST"], os.environ["OCR_PORT"], os.environ["OCR_WORKERS"]) == (
        "0.0.0.0",
        "8123",
        "3",
    )
    assert os.environ["OCR_MODEL_PATH"] == small_model_path
    err = capsys.readouterr().err
    assert "http://0.0.0.0:8123 with 3 worker(s)" in err
    assert "warning" not in err


def test_missing_model_is_a_warning_not_a_failure(exec_calls, tmp_path, capsys):
    serve.main(["--model", str(tmp_path / "nothing")])
    assert len(exec_calls) == 1
    assert "no model at" in capsys.readouterr().err


def test_bad_settings_exit_2_without_starting(exec_calls, capsys):
    assert serve.main(["--port", "70000"]) == 2
    assert exec_calls == []
    assert "OCR_PORT must be in 1..65535" in capsys.readouterr().err


def _gunicorn_settings(env: dict[str, str], source: str) -> dict:
    """Import a gunicorn config in a clean interpreter and report its settings as JSON."""
    code = (
        "import json, os, sys\n"
        f"cfg = {source}\n"
        "keys = ['bind', 'workers', 'threads', 'worker_class', 'timeout', 'graceful_timeout',\n"
        "        'max_requests', 'max_requests_jitter', 'preload_app', 'worker_tmp_dir',\n"
        "        'accesslog', 'wsgi_app']\n"
        "out = {k: cfg[k] for k in keys}\n"
        "out['hooks'] = sorted(k for k in ('on_starting', 'on_reload', 'post_fork',\n"
        "                      'child_exit', 'on_exit') if callable(cfg.get(k)))\n"
        "out['numpy_loaded'] = 'numpy' in sys.modules\n"
        "out['blas'] = os.environ.get('OPENBLAS_NUM_THREADS')\n"
        "out['metrics_dir'] = os.environ.get('PROMETHEUS_MULTIPROC_DIR')\n"
        "print(json.dumps(out))\n"
    )
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("OCR_") and k not in ("OPENBLAS_NUM_THREADS",
                                                       "PROMETHEUS_MULTIPROC_DIR")}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, cwd=REPO,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)


def test_packaged_gunicorn_config_reads_the_environment():
    env = {"OCR_HOST": "::1", "OCR_PORT": "9100", "OCR_WORKERS": "3", "OCR_THREADS": "5",
           "OCR_ACCESS_LOG": "", "OCR_MAX_REQUESTS": "1000"}  # fmt: skip
    cfg = _gunicorn_settings(env, "vars(__import__('ocr_service.gunicorn_config').gunicorn_config)")
    assert cfg["bind"] == ["[::1]:9100"]
    assert (cfg["workers"], cfg["threads"]) == (3, 5)
    assert cfg["worker_class"] == "ocr_service.gunicorn_worker.BalancedThreadWorker"
    assert cfg["max_requests"] == 1000 and 0 < cfg["max_requests_jitter"] <= 100
    assert cfg["preload_app"] is True
    assert cfg["accesslog"] is None
    assert cfg["wsgi_app"] == "ocr_service.app:create_app()"
    assert cfg["hooks"] == ["child_exit", "on_exit", "on_reload", "on_starting", "post_fork"]
    # BLAS limited and metrics directory chosen before numpy / prometheus_client load
    assert cfg["numpy_loaded"] is False
    assert cfg["blas"] == "1"
    assert cfg["metrics_dir"] and os.path.isdir(cfg["metrics_dir"])
    os.rmdir(cfg["metrics_dir"])
    if os.path.isdir("/dev/shm"):
        assert cfg["worker_tmp_dir"] == "/dev/shm"


def test_checkout_gunicorn_conf_is_the_packaged_config():
    source = "{}\nexec(open('gunicorn.conf.py').read(), cfg)"
    root = _gunicorn_settings({"OCR_PORT": "9200"}, source)
    assert root["bind"] == ["127.0.0.1:9200"]
    assert root["hooks"] == ["child_exit", "on_exit", "on_reload", "on_starting", "post_fork"]
    os.rmdir(root["metrics_dir"])
