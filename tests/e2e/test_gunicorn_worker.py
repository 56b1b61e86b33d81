"""The balanced threaded worker, in the real gunicorn: connections go to workers with a
free request thread (stock ``gthread`` lets whichever worker wakes first take them all)."""

import os
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.http import wsgi
from gunicorn.http.message import Request
from gunicorn.http.unreader import IterUnreader
from gunicorn.workers.gthread import TConn

from ocr_service import gunicorn_worker
from ocr_service.gunicorn_worker import BalancedThreadWorker
from ocr_testing.server_utils import digit_png, running_server, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PNG = digit_png("1")


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _holders(pids: set[int], server_port: int, clients: list[socket.socket]) -> list[int | None]:
    """The worker PID holding the server side of each client connection (None: not accepted)."""
    by_client_port: dict[int, str] = {}  # client port -> socket inode of the server side
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        remote_port = int(fields[2].rsplit(":", 1)[1], 16)
        if local_port == server_port and fields[3] == "01":  # ESTABLISHED
            by_client_port[remote_port] = fields[9]
    owner: dict[str, int] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:["):
                owner[target[8:-1]] = pid
    return [owner.get(by_client_port.get(c.getsockname()[1], "")) for c in clients]


def test_a_burst_of_connections_is_shared_between_the_workers(small_model_path, tmp_path):
    with running_server(small_model_path, tmp_path, env={"OCR_THREADS": "2"}) as srv:
        port, workers = _port(srv.url), srv.worker_pids()
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        head = b"POST /v1/predict HTTP/1.1\r\nHost: t\r\n"
        rest = (b"Content-Type: image/png\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                % len(PNG) + PNG)  # fmt: skip
        try:
            for client in clients:
                client.sendall(head)
            # Each accepted connection takes a thread until its request is complete: two per
            # worker, and the fifth waits for a free thread.
            assert wait_until(lambda: sum(map(bool, _holders(workers, port, clients))) == 4, 3)
            holders = _holders(workers, port, clients)
            assert sorted(holders.count(pid) for pid in workers) == [2, 2], holders
            for client in clients:
                client.sendall(rest)
            for client in clients:
                client.settimeout(10)
                assert client.makefile("rb").readline().startswith(b"HTTP/1.1 200")
        finally:
            for client in clients:
                client.close()


def test_a_busy_worker_leaves_new_connections_to_a_free_one(small_model_path, tmp_path):
    with running_server(small_model_path, tmp_path, env={"OCR_THREADS": "1"}) as srv:
        port, workers = _port(srv.url), srv.worker_pids()
        stalled = socket.create_connection(("127.0.0.1", port))
        try:
            # A client that sends its headers and stalls in the body holds one worker's thread.
            stalled.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
                            b"Content-Length: 1000\r\n\r\n" + PNG[:10])
            assert wait_until(lambda: _holders(workers, port, [stalled])[0] is not None, 3)
            for _ in range(10):  # each on a new connection: none may wait behind the stall
                response = requests.post(srv.url + "/v1/predict", data=PNG, timeout=3,
                                         headers={"Content-Type": "image/png",
                                                  "Connection": "close"})  # fmt: skip
                assert response.status_code == 200
                assert response.json()["text"] == "1"
        finally:
            stalled.close()


def test_new_clients_get_in_while_kept_alive_ones_keep_every_thread_busy(
    small_model_path, tmp_path
):
    headers = {"Content-Type": "image/png"}
    with running_server(small_model_path, tmp_path, env={"OCR_THREADS": "1"}, workers=1) as srv:
        stop = threading.Event()

        def keep_posting() -> None:
            with requests.Session() as session:
                while not stop.is_set():
                    session.post(srv.url + "/v1/predict", data=PNG, headers=headers, timeout=10)

        clients = [threading.Thread(target=keep_posting) for _ in range(3)]
        for client in clients:
            client.start()
        try:
            time.sleep(0.5)  # the worker's one thread never idles from here on
            for _ in range(5):
                response = requests.post(srv.url + "/v1/predict", data=PNG, timeout=3,
                                         headers={**headers, "Connection": "close"})  # fmt: skip
                assert response.status_code == 200
        finally:
            stop.set()
            for client in clients:
                client.join()


def _hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


@pytest.fixture
def one_connection():
    """An in-process worker (2 threads) with its listener, and one accepted connection as
    (the worker, its connection, the client's socket, the listener's address)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        cfg = Config()
        cfg.set("threads", 2)
        worker = BalancedThreadWorker(0, os.getpid(), [listener], None, 30, cfg, Logger(cfg))
        worker.wsgi = _hello
        with socket.create_connection(listener.getsockname()) as client:
            server_side, address = listener.accept()
            conn = TConn(cfg, server_side, address, listener.getsockname())
            worker.in_flight = 1  # the main loop's count: this connection
            try:
                yield worker, conn, client, listener.getsockname()
            finally:
                conn.close()


def _answers(client: socket.socket) -> int:
    """Responses the client has received so far."""
    client.setblocking(False)
    received = b""
    while True:
        try:
            chunk = client.recv(65536)
        except BlockingIOError:
            return received.count(b"HTTP/1.1 200 OK")
        if not chunk:
            return received.count(b"HTTP/1.1 200 OK")
        received += chunk


_GET = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


def test_a_thread_answers_the_requests_that_follow_on_its_connection(one_connection):
    worker, conn, client, _ = one_connection
    client.sendall(_GET * 3)  # pipelined: read ahead with the first
    assert worker.handle(conn) is True  # kept alive, back to the main loop once idle
    assert _answers(client) == 3


def test_a_thread_waits_a_moment_for_the_next_request(one_connection, monkeypatch):
    worker, conn, client, _ = one_connection
    monkeypatch.setattr(gunicorn_worker, "LINGER_SECONDS", 30.0)  # however slow this machine

    def one_request_after_another() -> None:
        received = b""
        for count in range(1, 4):
            client.sendall(_GET)
            while received.count(b"\r\n\r\nok") < count:
                received += client.recv(65536)
        client.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=one_request_after_another)
    sender.start()
    assert worker.handle(conn) is False  # all three answered, then the client hung up
    sender.join()


def test_a_thread_hands_its_connection_back_while_another_waits_for_a_thread(one_connection):
    worker, conn, client, _ = one_connection
    worker.in_flight = worker.cfg.threads + 1  # one connection queued for a thread
    client.sendall(_GET * 3)
    assert worker.handle(conn) is True
    assert _answers(client) == 1


def test_a_thread_hands_its_connection_back_while_a_new_one_waits(one_connection):
    worker, conn, client, address = one_connection
    with socket.create_connection(address):  # waits in the listener's queue
        client.sendall(_GET * 3)
        assert worker.handle(conn) is True
    assert _answers(client) == 1


def _response(request: bytes) -> tuple[wsgi.Response, list[bytes]]:
    """The response gunicorn's request handler builds for raw ``request`` bytes, and the
    list of what it sends, one item per system call."""
    cfg, sent = Config(), []
    req = Request(cfg, IterUnreader([request]), ("127.0.0.1", 1), 1)
    sock = SimpleNamespace(sendall=sent.append)
    response, _ = wsgi.create(req, sock, ("127.0.0.1", 1), ("127.0.0.1", 80), cfg)
    return response, sent


def test_a_response_leaves_in_one_write_so_a_killed_worker_cannot_cut_it_in_two():
    response, sent = _response(b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
    response.start_response("200 OK", [("Content-Type", "application/json"),
                                       ("Content-Length", "11")])
    response.write(b'{"text":1}\n')
    response.close()
    assert len(sent) == 1
    assert sent[0].startswith(b"HTTP/1.1 200 OK\r\n") and sent[0].endswith(b'\r\n\r\n{"text":1}\n')


def test_headers_without_a_body_and_later_chunks_are_still_sent():
    head, sent = _response(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
    head.start_response("200 OK", [("Content-Length", "5")])
    head.write(b"hello")  # a HEAD response has no body
    head.close()
    assert len(sent) == 1 and sent[0].endswith(b"Content-Length: 5\r\n\r\n")

    chunked, sent = _response(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    chunked.start_response("200 OK", [])
    chunked.write(b"ab")
    chunked.write(b"cd")
    chunked.close()
    assert sent[0].endswith(b"\r\n\r\n2\r\nab\r\n") and sent[1:] == [b"2\r\ncd\r\n", b"0\r\n\r\n"]

