"""Settings: defaults -> OCR_* environment -> overrides, with named errors for bad values."""

import re
from dataclasses import fields

import pytest

from ocr_service.config import ConfigError, Settings, default_workers, load_settings
from ocr_testing.server_utils import REPO


def test_defaults_match_the_documented_values():
    s = load_settings(environ={})
    assert s == Settings()
    assert (s.host, s.port, s.max_upload_bytes, s.max_pixels, s.max_batch) == (
        "127.0.0.1",
        8000,
        5 * 1024 * 1024,
        16_000_000,
        64,
    )
    assert s.admin_token == ""
    assert s.model_path is None
    assert s.worker_count == default_workers() >= 1


def test_environment_overrides_defaults_and_overrides_win():
    env = {"OCR_PORT": "9001", "OCR_ADMIN_TOKEN": "s3cret", "OCR_MAX_BATCH": "5"}
    s = load_settings({"port": 9002}, environ=env)
    assert s.port == 9002
    assert s.admin_token == "s3cret"
    assert s.max_batch == 5
    assert s.max_form_parts > s.max_batch


def test_empty_numeric_variable_means_default_but_empty_access_log_disables_it():
    s = load_settings(environ={"OCR_WORKERS": "", "OCR_ACCESS_LOG": ""})
    assert s.workers == 0
    assert s.access_log == ""


def test_model_path_expands_user(monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    s = load_settings(environ={"OCR_MODEL_PATH": "~/models/m"})
    assert s.model_path == "/home/someone/models/m"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OCR_PORT": "eighty"}, "OCR_PORT must be an integer"),
        ({"OCR_PORT": "70000"}, "OCR_PORT must be in 1..65535"),
        ({"OCR_MAX_BATCH": "0"}, "OCR_MAX_BATCH must be >= 1"),
        ({"OCR_THREADS": "-2"}, "OCR_THREADS must be >= 1"),
    ],
)
def test_bad_environment_values_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=env)


def test_unknown_override_is_refused():
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        load_settings({"prot": 1}, environ={})


def test_readme_documents_every_setting_with_its_default():
    readme = (REPO / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(OCR_[A-Z_]+)` \| ([^|]+) \|", readme, flags=re.M))
    assert set(rows) == {"OCR_" + f.name.upper() for f in fields(Settings)}
    defaults = Settings()
    for name in ("port", "threads", "timeout", "max_batch", "max_pixels", "max_upload_bytes"):
        assert f"`{getattr(defaults, name)}`" in rows["OCR_" + name.upper()]
