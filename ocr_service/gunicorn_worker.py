"""gunicorn's threaded worker, listening for new connections only while a thread is free.

Every worker of the stock ``gthread`` worker accepts new connections as fast as it can,
busy or not. Connections are kept alive, so whichever worker wins the accept race keeps
serving that client: when a load balancer or a client opens its connections in one
burst, one worker often takes all of them, and reads at a fraction of the service's speed while
the other core idles (figures: docs/benchmarks.md).

This worker listens only while it has fewer connections in its request threads than it
has threads (a new connection counts from its accept until its first request is answered,
or until gunicorn gives up waiting for it after 5 s). Otherwise a new connection waits in
the kernel's queue, shared by all workers, for one that can start on it: a burst of
connections is shared out, and a worker stalled by slow clients leaves new ones to the
others. Under saturation every worker is busy all the time, so each finished request also
lets one waiting connection in (it may then queue behind the kept-alive ones): new clients
are not starved.

A request thread that has answered a kept-alive connection also waits a moment
(``LINGER_SECONDS``) for that connection's next request and answers it itself, as long as no
other connection waits for a thread and no new connection waits to be accepted: the stock
worker hands every request of a connection from the main loop to a thread and back (a
thread-pool submission, a wake-up pipe, two poller registrations and two thread switches),
which costs more CPU than a short request itself (figures: docs/benchmarks.md).

Each response also goes out with its headers and the first bytes of its body in one write
(``WholeResponse``).

It overrides methods of gunicorn 27's ``ThreadWorker`` and ``Response`` that are not a
public API; the version is pinned in ``pyproject.toml`` and checked below.
"""

from __future__ import annotations

import inspect
import select
from typing import Any

from gunicorn.http import wsgi
from gunicorn.workers.gthread import ThreadWorker

__all__ = ["LINGER_SECONDS", "BalancedThreadWorker", "WholeResponse"]

#: How long a request thread waits for the next request of the connection it has answered.
#: A client that sends its requests one after another has the next one there well within
#: it; an idle one costs the thread this long, once, before the main loop watches it again.
LINGER_SECONDS = 0.001

if (
    not hasattr(ThreadWorker, "set_accept_enabled")
    or list(inspect.signature(ThreadWorker.finish_request).parameters) != ["self", "conn", "fs"]
    or list(inspect.signature(ThreadWorker.handle).parameters) != ["self", "conn"]
    or inspect.signature(wsgi.create).parameters["response_class"].default is not None
    or not hasattr(wsgi.Response, "_emit_body")
):
    raise ImportError("BalancedThreadWorker needs gunicorn 27's gthread worker")


class _Gathered:
    """Stands in for a response's socket: keeps what is sent, to send it at once."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.parts.append(data)


class WholeResponse(wsgi.Response):
    """gunicorn's HTTP/1 response, whose first write sends its headers and its first body
    bytes (the whole body of a prediction) in one system call.

    gunicorn writes the headers and the body separately. A worker killed between the two
    (``kill -9``, the kernel's OOM killer) leaves the client, or the load balancer in front,
    with headers and no body, and a balancer cannot send the request to another replica
    once the response has begun. One write also saves a system call per request.
    """

    def write(self, arg: bytes) -> None:
        if self.headers_sent:
            super().write(arg)
            return
        sock, gathered = self.sock, _Gathered()
        self.sock = gathered
        try:
            super().write(arg)
        finally:
            self.sock = sock
            if gathered.parts:
                sock.sendall(b"".join(gathered.parts))


# gthread's request handler builds its HTTP/1 responses from this module-level name.
wsgi.Response = WholeResponse


class BalancedThreadWorker(ThreadWorker):
    """``gthread`` that listens for new connections only while a request thread is free."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: connections handed to the thread pool and not yet finished (main thread only)
        self.in_flight = 0

    def set_accept_enabled(self, enabled: bool) -> None:
        # The base loop turns accepting on whenever it is below its connection cap; a
        # worker that is stopping or has no free thread keeps it off.
        super().set_accept_enabled(enabled and self.alive and self.in_flight < self.cfg.threads)

    def accept(self, listener: Any) -> None:
        # The poller's callback. Events are collected before any is handled, so a listener
        # turned off earlier in the same batch may still report a waiting connection.
        if self._accepting:
            super().accept(listener)

    def enqueue_req(self, conn: Any) -> None:
        super().enqueue_req(conn)
        self.in_flight += 1  # after the submit: a refused submit must not count
        if self.in_flight >= self.cfg.threads:
            self.set_accept_enabled(False)

    def handle(self, conn: Any) -> Any:
        # Request thread: answer the connection's requests while they follow each other.
        result = super().handle(conn)
        while result is True and self._next_request_ready(conn):
            result = super().handle(conn)
        return result

    def _next_request_ready(self, conn: Any) -> bool:
        """Whether this thread should answer the connection's next request itself: it is
        there (or arrives within ``LINGER_SECONDS``) and no other connection waits, neither
        for a thread nor to be accepted."""
        if not self.alive or self.in_flight > self.cfg.threads:
            return False
        read_ahead = bool(conn.parser.unreader.buf.getvalue())
        watched = [*self.sockets] if read_ahead else [conn.sock, *self.sockets]
        poller = select.poll()  # not select(): descriptors may exceed FD_SETSIZE
        for sock in watched:
            poller.register(sock, select.POLLIN)
        ready = [fd for fd, _ in poller.poll(0 if read_ahead else LINGER_SECONDS * 1000)]
        return not ready if read_ahead else ready == [conn.sock.fileno()]

    def finish_request(self, conn: Any, fs: Any) -> None:
        self.in_flight -= 1
        super().finish_request(conn, fs)  # may hand the connection back to the pool
        if self.alive and self.nr_conns < self.worker_connections:
            self._admit_one()
        self.set_accept_enabled(self.nr_conns < self.worker_connections)

    def _admit_one(self) -> None:
        """Accept one waiting connection, if any, from the first listener that has one.

        The listeners are non-blocking (gunicorn makes them so before any worker runs), so
        an empty queue costs one ``accept`` call failing with EAGAIN, which gthread ignores.
        """
        for listener in self.sockets:
            before = self.nr_conns
            ThreadWorker.accept(self, listener)
            if self.nr_conns != before:
                return
