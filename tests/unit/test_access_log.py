"""The access logger writes exactly gunicorn's lines for the service's format."""

from datetime import timedelta

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from ocr_service.access_log import ACCESS_LOG_FORMAT, AccessLogger


class _Response:
    def __init__(self, status: str, sent: int | None) -> None:
        self.status, self.sent = status, sent
        self.headers = [("Content-Type", "application/json")]


class _Request:
    headers = (("HOST", "127.0.0.1"), ("USER-AGENT", "test"))


def _lines(logger_class: type, path, fmt: str, calls) -> list[str]:
    cfg = Config()
    cfg.set("accesslog", str(path))
    cfg.set("access_log_format", fmt)
    log = logger_class(cfg)
    for response, environ, took in calls:
        log.access(response, _Request(), environ, took)
    for handler in log.access_log.handlers:
        handler.close()
    return path.read_text().splitlines()


def _environ(uri: str, method: str = "GET", remote: str | None = "10.0.0.7") -> dict:
    environ = {"REQUEST_METHOD": method, "RAW_URI": uri, "SERVER_PROTOCOL": "HTTP/1.1",
               "PATH_INFO": uri.split("?")[0], "QUERY_STRING": ""}
    if remote is not None:
        environ["REMOTE_ADDR"] = remote
    return environ


CALLS = [
    (_Response("200 OK", 16), _environ("/healthz"), timedelta(microseconds=1500)),
    (_Response("413 REQUEST ENTITY TOO LARGE", 0), _environ("/v1/predict", "POST"),
     timedelta(seconds=2, microseconds=999)),
    (_Response("404 NOT FOUND", None), _environ('/a"b?x="y"', remote=None), timedelta()),
]


@pytest.mark.parametrize("fmt", [ACCESS_LOG_FORMAT, '%(h)s %(t)s "%(r)s" %(s)s %(a)s'])
def test_lines_are_gunicorns_own(tmp_path, fmt):
    ours = _lines(AccessLogger, tmp_path / "ours.log", fmt, CALLS)
    theirs = _lines(Logger, tmp_path / "gunicorn.log", fmt, CALLS)
    assert len(ours) == len(CALLS)
    if "%(t)s" in fmt:  # a timestamp: compare the rest
        ours = [line.split("]", 1)[1] for line in ours]
        theirs = [line.split("]", 1)[1] for line in theirs]
    assert ours == theirs
    assert ours[0].endswith('"GET /healthz HTTP/1.1" 200 16 1ms') or "%(t)s" in fmt

