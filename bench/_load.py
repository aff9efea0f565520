"""An open-loop load generator for the benchmarks that time callbacks end to end: each
request is sent on its schedule (``start + i / rate``), whether or not earlier ones
were answered, by a pool of threads holding keep-alive connections; a request whose
thread was busy at its time goes out late, and its latency still counts from its
scheduled time (no coordinated omission). ``rate=None`` sends as fast as the threads go.
"""

from __future__ import annotations

import http.client
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Sent:
    scheduled_wall: list[float]  # time.time() each request was due
    status: list[int] = field(default_factory=list)  # 0: no answer (connection error)
    ack_seconds: list[float] = field(default_factory=list)  # scheduled -> answered
    seconds: float = 0.0  # first scheduled -> last answered
    gave_up: bool = False

    @property
    def accepted(self) -> int:
        return sum(1 for s in self.status if 200 <= s < 300)

    @property
    def non_2xx(self) -> int:
        return len(self.status) - self.accepted


def send(
    ports: Sequence[int],
    path: str,
    bodies: Sequence[bytes],
    *,
    rate: float | None,
    threads: int = 16,
    limit: float = 120.0,
) -> Sent:
    """POST each body once, in order, spread over ``ports`` (request i to ``ports[i % n]``)."""
    n = len(bodies)
    todo: queue.Queue[int | None] = queue.Queue()
    status = [0] * n
    acks = [0.0] * n
    start = time.monotonic() + 0.2
    offset = time.time() - time.monotonic()
    due = [start + i / rate if rate else start for i in range(n)]
    stop = threading.Event()

    def worker() -> None:
        conns: dict[int, http.client.HTTPConnection] = {}
        while True:
            i = todo.get()
            if i is None or stop.is_set():
                break
            port = ports[i % len(ports)]
            for attempt in (1, 2):  # a keep-alive connection the server closed: once more
                conn = conns.get(port) or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conns[port] = conn
                try:
                    conn.request("POST", path, bodies[i], {"Content-Type": "application/json"})
                    answer = conn.getresponse()
                    answer.read()
                    status[i] = answer.status
                    break
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conns.pop(port, None)
                    if attempt == 2:
                        status[i] = 0
            acks[i] = time.monotonic() - due[i]
        for conn in conns.values():
            conn.close()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    end = start + limit
    gave_up = False
    for i in range(n):
        wait = due[i] - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if time.monotonic() > end:
            gave_up = True
            break
        todo.put(i)
    for _ in pool:
        todo.put(None)
    for t in pool:
        t.join(max(end - time.monotonic(), 0) + 35)
    if any(t.is_alive() for t in pool):
        stop.set()
        gave_up = True
    last = max((due[i] + acks[i] for i in range(n) if status[i]), default=start)
    return Sent(
        scheduled_wall=[d + offset for d in due],
        status=status,
        ack_seconds=acks,
        seconds=last - start,
        gave_up=gave_up,
    )
