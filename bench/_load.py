"""An open-loop load generator for the benchmarks that time callbacks end to end: each
request is sent on its schedule (``start + i / rate``), whether or not earlier ones
were answered, by a pool of threads holding keep-alive connections; a request whose
thread was busy at its time goes out late, and its latency still counts from its
scheduled time (no coordinated omission). ``rate=None`` sends as fast as the threads go.
"""

from __future__ import annotations

import http.client
import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


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


@dataclass
class Blasted:
    """What ``blast`` saw: answers to the POSTs (each body once), and when they were in."""

    accepted: int
    non_2xx: int
    socket_errors: int
    seconds: float  # the first send -> the last answer (of the slowest wrk)
    gave_up: bool


# Each body of the file once, on every connection of one wrk thread, then stop: the thread
# stops at the last answer. A connection that asks for a request once every body is out
# waits (``delay``) and then sends a GET, which the callback path answers 405 (uncounted).
ONCE_LUA = r"""
local bodies, n, i, answered, ok = {}, 0, 0, 0, 0
local checked = false

function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    bodies[n] = line
  end
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function delay()
  if i < n then return 0 end
  return 20
end

function request()
  if not checked then  -- wrk calls it once before the run, to check it (one thread: ours)
    checked = true
    return wrk.format(nil, nil, nil, bodies[1])
  end
  if i < n then
    i = i + 1
    return wrk.format(nil, nil, nil, bodies[i])
  end
  return wrk.format("GET")
end

function response(status, headers, body)
  if status == 405 then return end
  answered = answered + 1
  if status >= 200 and status < 300 then ok = ok + 1 end
  if answered == n then
    io.write(string.format('{"answered":%d,"ok":%d}\n', answered, ok))
    io.stdout:flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"socket_errors":%d}\n', e.connect + e.read + e.write + e.timeout))
end
"""


def blast(
    ports: Sequence[int], path: str, bodies: Sequence[bytes], folder: Path, *, connections: int, limit: float
) -> Blasted:
    """POST each body once, as fast as ``wrk`` goes (its CPU is a fraction of a Python
    client's, which would take the cores the service is measured on): request i to
    ``ports[i % n]``, one wrk process (one thread, ``connections / n`` connections) per
    port. Returns once every body is answered, or after ``limit`` seconds."""
    script = folder / "once.lua"
    script.write_text(ONCE_LUA)
    procs = []
    for k, port in enumerate(ports):
        part = folder / f"bodies-{port}.txt"
        part.write_bytes(b"".join(body + b"\n" for body in bodies[k :: len(ports)]))
        args = [
            "wrk", "-t1", f"-c{max(1, connections // len(ports))}", f"-d{int(limit)}s", "--timeout", "30s",
            "-s", str(script), f"http://127.0.0.1:{port}{path}", "--", str(part),
        ]  # fmt: skip
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    start = time.monotonic()
    answers: list[dict] = []
    last = start
    gave_up = False
    for proc in procs:  # one JSON line per wrk at its last answer; wrk then sleeps out its -d
        assert proc.stdout is not None
        for line in proc.stdout:  # "Running 150s test @ ..." comes first
            if line.startswith("{"):
                answers.append(json.loads(line))
                last = max(last, time.monotonic())
                break
        else:
            gave_up = True
    errors = 0
    for proc in procs:
        proc.send_signal(signal.SIGINT)  # wrk prints its summary at once
        out, _ = proc.communicate(timeout=30)
        errors += sum(json.loads(s)["socket_errors"] for s in out.splitlines() if s.startswith('{"socket'))
    accepted = sum(a["ok"] for a in answers)
    return Blasted(
        accepted=accepted,
        non_2xx=sum(a["answered"] for a in answers) - accepted,
        socket_errors=errors,
        seconds=last - start,
        gave_up=gave_up,
    )
