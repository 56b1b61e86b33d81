"""gunicorn's threaded worker, accepting a connection only while it has a free request thread.

Every worker of the stock ``gthread`` worker accepts new connections as fast as it can,
busy or not. Connections are kept alive, so whichever worker wins the accept race keeps
serving that client: when a load balancer or a client opens its connections in one
burst, one worker often takes all of them. Measured with ``scripts/bench_serve.py``
(2 workers, 8 keep-alive connections): all 8 landed on one worker in 4 of 12 runs, and
those runs read 290-350 uploads/s against 850-990 when the connections were shared, while
the other core idled. This worker stops listening while all its request threads are busy,
so a new connection waits in the kernel's queue for a worker that can start on it at once:
a burst of connections is shared out, and a request is never queued behind a busy worker
while another one is free. Under saturation each finished request lets one waiting
connection in, so new clients are not starved by kept-alive ones.
"""

from __future__ import annotations

from typing import Any

from gunicorn.workers.gthread import ThreadWorker

__all__ = ["BalancedThreadWorker"]


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

    def enqueue_req(self, conn: Any) -> None:
        self.in_flight += 1
        super().enqueue_req(conn)
        if self.in_flight >= self.cfg.threads:
            self.set_accept_enabled(False)

    def finish_request(self, conn: Any, fs: Any) -> None:
        self.in_flight -= 1
        super().finish_request(conn, fs)  # may hand the connection back to the pool
        if self.alive and self.nr_conns < self.worker_connections:
            # Every finished request lets one waiting client in: under saturation the
            # kept-alive connections keep every thread busy, and a new client would otherwise
            # wait in the kernel's queue until it gives up. Busy workers finish requests at
            # the same pace, so they still share the newcomers.
            for listener in self.sockets:
                self.accept(listener)  # nobody waiting: EAGAIN, ignored
        self.set_accept_enabled(self.nr_conns < self.worker_connections)
