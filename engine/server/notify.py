"""The service manager's side of the engine: the systemd notify protocol (sd_notify(3)),
spoken by the engine itself, and the event-loop task that proves the loop is alive.

The protocol is a datagram of ``NAME=VALUE`` lines sent to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a leading "@": the abstract namespace).  Without that variable
every call here is a no-op.  What the engine says (deploy/systemd/essc-engine.service,
docs/DEPLOYMENT.md, "Running the engine under systemd"):

- ``READY=1`` once it listens with its data loaded, and again when a reload ends;
- ``RELOADING=1`` with ``MONOTONIC_USEC`` on each SIGHUP (loaded or not, ``READY=1``
  follows once every reload asked for has ended);
- ``STOPPING=1`` when a drain begins;
- ``STATUS=serving: trust list 3, revocation 12, 42 connections`` at each of those
  and when it changes;
- ``WATCHDOG=1`` every ``$WATCHDOG_USEC`` / 2 when it is set (and ``$WATCHDOG_PID``,
  if set, is this process).

**The watchdog is fed from the event loop.**  ``watch_loop`` is a task on the loop:
it wakes every ``TICK_S``, measures how late the loop runs a callback (the
``essc_event_loop_lag_seconds`` histogram) and only then sends the ping, so a loop
held by a blocking call, a livelock or a deadlock stops the pings and systemd kills
and restarts the service (``WatchdogSec=``, ``Restart=on-failure``).  A thread could
not do this: it would keep pinging for a dead loop.

**Under a supervisor** (``server.processes`` > 1) the supervisor is the main PID and
the only process that speaks to systemd (``NotifyAccess=main``).  ``NotifyAccess=all``
with each worker pinging was rejected: systemd keeps one watchdog timer per unit, which
any process's ``WATCHDOG=1`` resets, so with one worker's loop stuck the others would
keep the unit alive forever.  Instead each worker's loop task reports to the
supervisor over the pipe it already reports its metrics port on (``ToSupervisor``:
one JSON line every ``$WATCHDOG_USEC`` / 2), and the supervisor (``Supervised``)

- sends ``READY=1`` when every worker first listens, ``RELOADING=1`` when it forwards
  a SIGHUP and ``READY=1`` once every worker that listened then has reported that
  reload ended, ``STOPPING=1`` when it stops, and a ``STATUS`` summing the workers;
- kills (SIGKILL) a worker that has listened and then said nothing for a whole
  ``$WATCHDOG_USEC``; its usual restart logic starts a new one (``worker_unresponsive``
  in the log), while the other workers keep serving;
- pings ``WATCHDOG=1`` from its own loop, so systemd restarts the whole service only
  when the supervisor itself is stuck.  A worker that keeps failing to start still
  makes the supervisor give up and exit 2, which ``Restart=on-failure`` handles.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from engine.server import logs

__all__ = [
    "Notifier",
    "Serving",
    "Supervised",
    "Systemd",
    "ToSupervisor",
    "Watcher",
    "monotonic_usec",
    "watch_loop",
]

TICK_S = 0.1  # the loop task's period: one lag sample, and a ping when one is due
# Timers fire late by up to their granularity (uvloop's are whole milliseconds); later
# than this, the loop was held, and the lateness counts as lag.
TIMER_SLACK_S = 0.002
STATUS_INTERVAL_S = 5.0  # without a watchdog, how often a changed STATUS is sent

_log = logs.event


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds: systemd's ``MONOTONIC_USEC`` (system-wide, so a
    worker's and its supervisor's readings compare)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _address(raw: str | None) -> str | None:
    if not raw:
        return None
    if raw.startswith("@"):  # abstract namespace: a leading NUL byte
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    # systemd 254+ also names vsock: addresses (a VM's service manager): not spoken here.
    _log(logging.WARNING, "notify_socket_unsupported", address=raw)
    return None


class Notifier:
    """``sd_notify``: datagrams to ``$NOTIFY_SOCKET``, never waiting (a busy or gone
    service manager loses a message rather than holding the event loop)."""

    def __init__(self, address: str | None, watchdog_s: float | None = None) -> None:
        self.address = _address(address)
        self.watchdog_s = watchdog_s if self.address is not None else None
        self._sock: socket.socket | None = None
        self._failed = logs.RateLimited()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """As systemd starts the service: ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and
        ``WATCHDOG_PID`` (a watchdog meant for another process is not this one's)."""
        watchdog = None
        usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and pid in ("", str(os.getpid())):
            watchdog = int(usec) / 1e6
        return cls(environ.get("NOTIFY_SOCKET"), watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        if self.address is None or not fields:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as e:
            self._failed(logging.WARNING, "notify_failed", error=str(e))
            return False
        return True


@dataclasses.dataclass(frozen=True)
class Serving:
    """What a serving process has in service, for ``STATUS`` and the supervisor."""

    trust_list: int
    revocation: int | None  # None: no revocation data configured
    connections: int
    draining: bool = False


def status_line(states: Iterable[Serving], workers: str = "") -> str:
    """``serving: trust list 3, revocation 12, 42 connections`` (several processes: the
    sequences each has, joined by "/", and the connections summed)."""
    states = list(states)
    if not states:
        return f"starting{workers}"

    def seqs(values: set[int | None]) -> str:
        ordered = sorted(values, key=lambda v: -1 if v is None else v)
        return "/".join("none" if v is None else str(v) for v in ordered)

    verb = "draining" if any(s.draining for s in states) else "serving"
    connections = sum(s.connections for s in states)
    return (
        f"{verb}{workers}: trust list {seqs({s.trust_list for s in states})}, "
        f"revocation {seqs({s.revocation for s in states})}, "
        f"{connections} connection{'' if connections == 1 else 's'}"
    )


class Watcher(Protocol):
    """Whom a serving process tells about its life cycle: systemd (a process serving
    alone) or its supervisor (a worker)."""

    every_s: float | None  # how often ``alive`` is wanted from the loop; None: never

    def ready(self, serving: Serving) -> None: ...
    def reloading(self) -> None: ...
    def reloaded(self, serving: Serving) -> None: ...
    def stopping(self) -> None: ...
    def alive(self, serving: Serving) -> None: ...


class Systemd:
    """A process serving alone: it is the main PID and tells systemd itself."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        wd = notifier.watchdog_s
        self.every_s = None if not notifier.enabled else wd / 2 if wd else STATUS_INTERVAL_S
        self._reloads = 0  # SIGHUP reloads asked for and not ended
        self._status: str | None = None

    def _status_field(self, serving: Serving, changed_only: bool = False) -> list[str]:
        line = status_line([serving])
        if changed_only and line == self._status:
            return []
        self._status = line
        return [f"STATUS={line}"]

    def ready(self, serving: Serving) -> None:
        self.notifier.send("READY=1", *self._status_field(serving))

    def reloading(self) -> None:
        self._reloads += 1
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def reloaded(self, serving: Serving) -> None:
        self._reloads = max(0, self._reloads - 1)
        if self._reloads == 0:  # a second SIGHUP during a reload: READY once both ended
            self.notifier.send("READY=1", *self._status_field(serving))

    def stopping(self) -> None:
        self.notifier.send("STOPPING=1", "STATUS=draining")

    def alive(self, serving: Serving) -> None:
        ping = ["WATCHDOG=1"] if self.notifier.watchdog_s else []
        self.notifier.send(*ping, *self._status_field(serving, changed_only=True))


class ToSupervisor:
    """A supervised worker: one JSON line per report on the pipe to the supervisor
    (``engine.server.supervisor``; its first line, ``metrics_port``, is the
    supervisor's own).  The write end is non-blocking: a supervisor that does not
    read loses heartbeats (and then kills this worker) rather than holding its loop."""

    def __init__(self, fd: int, every_s: float) -> None:
        self.fd = fd
        self.every_s: float | None = every_s
        self._reloads = 0
        self._hangup_at = 0  # µs: the latest SIGHUP this worker took

    def _write(self, doc: dict[str, Any]) -> None:
        # One line, far below PIPE_BUF: written whole or not at all.  OSError: the pipe
        # is full (the supervisor is stuck) or gone (it died), neither this loop's wait.
        with contextlib.suppress(OSError):
            os.write(self.fd, json.dumps(doc, separators=(",", ":")).encode() + b"\n")

    def ready(self, serving: Serving) -> None:
        self._write({"serving": dataclasses.asdict(serving)})

    def reloading(self) -> None:
        # Taken when the signal reaches this loop, so after the supervisor sent it.
        self._reloads += 1
        self._hangup_at = monotonic_usec()

    def reloaded(self, serving: Serving) -> None:
        self._reloads = max(0, self._reloads - 1)
        if self._reloads == 0:
            self._write({"reloaded_at": self._hangup_at, "serving": dataclasses.asdict(serving)})

    def stopping(self) -> None:
        pass  # the supervisor says STOPPING=1 when it stops

    def alive(self, serving: Serving) -> None:
        self._write({"serving": dataclasses.asdict(serving)})


async def watch_loop(
    observe_lag: Callable[[float], None],
    alive: Callable[[], None] | None,
    every_s: float | None,
) -> None:
    """The event loop's own heartbeat: every ``TICK_S`` one lag sample (how late the loop
    ran a callback due now), and ``alive()`` every ``every_s``.  Being a task on the
    loop is the point: when the loop is held, nothing here runs."""
    loop = asyncio.get_running_loop()
    next_alive = time.monotonic()  # the first report at once
    while True:
        due = time.monotonic() + TICK_S
        await asyncio.sleep(TICK_S)
        # Held while this task slept: the timer fires late by the time held.
        late = time.monotonic() - due
        # Held, or just busy, now: a callback scheduled for now waits its turn.
        soon: asyncio.Future[float] = loop.create_future()
        loop.call_soon(_answer, soon, time.perf_counter())
        lag = await soon
        observe_lag(lag + (late if late > TIMER_SLACK_S else 0.0))
        if alive is not None and every_s is not None and time.monotonic() >= next_alive:
            alive()
            next_alive = time.monotonic() + every_s


def _answer(soon: asyncio.Future[float], asked: float) -> None:
    if not soon.done():  # cancelled with its task
        soon.set_result(time.perf_counter() - asked)


@dataclasses.dataclass
class _Worker:
    pid: int
    seen: float  # monotonic: its last report line (or its start)
    listening: bool = False
    serving: Serving | None = None
    reloaded_at: int = 0  # µs: the SIGHUP of its last reload that ended
    hangup_sent_at: int | None = None  # µs: a SIGHUP sent and not yet reported done
    unresponsive: bool = False  # killed for silence; gone at its exit


class Supervised:
    """The supervisor's side (module docstring): systemd sees one service, whose
    readiness, reloads, status and watchdog are those of every worker."""

    def __init__(
        self, notifier: Notifier, processes: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.notifier = notifier
        self.processes = processes
        self._clock = clock
        wd = notifier.watchdog_s
        # What the workers are asked for: a line every half watchdog period (0: nothing).
        self.heartbeat_s = 0.0 if not notifier.enabled else wd / 2 if wd else STATUS_INTERVAL_S
        self._workers: dict[int, _Worker] = {}
        self._ready_sent = False
        self._reloading = False
        self._status: str | None = None
        self._next = clock()  # the next ping (or status) due

    def _status_field(self, changed_only: bool = False) -> list[str]:
        states = [w.serving for w in self._workers.values() if w.listening and w.serving]
        line = status_line(states, f" {len(states)}/{self.processes} workers")
        if changed_only and line == self._status:
            return []
        self._status = line
        return [f"STATUS={line}"]

    def started(self, index: int, pid: int) -> None:
        self._workers[index] = _Worker(pid, self._clock())

    def report(self, index: int, doc: Mapping[str, Any]) -> None:
        """A line from worker ``index``: any line proves its loop alive."""
        w = self._workers.get(index)
        if w is None:
            return
        w.seen = self._clock()
        if "metrics_port" in doc:
            w.listening = True
        if isinstance(doc.get("serving"), dict):
            w.serving = Serving(**doc["serving"])
        if isinstance(doc.get("reloaded_at"), int):
            w.reloaded_at = max(w.reloaded_at, doc["reloaded_at"])
            self._reload_check()

    def exited(self, index: int) -> None:
        self._workers.pop(index, None)
        self._reload_check()

    def all_listening(self) -> None:
        """Every worker has listened (once, at start)."""
        if not self._ready_sent:
            self._ready_sent = True
            self.notifier.send("READY=1", *self._status_field())

    def hangup(self) -> None:
        """Before the SIGHUP is forwarded: the workers listening now are waited for."""
        at = monotonic_usec()
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={at}")
        self._reloading = True
        for w in self._workers.values():
            if w.listening:  # one still starting loads the data as it is anyway
                w.hangup_sent_at = at
        self._reload_check()

    def _reload_check(self) -> None:
        if not self._reloading:
            return
        waiting = [
            w
            for w in self._workers.values()
            if w.hangup_sent_at is not None and w.reloaded_at < w.hangup_sent_at
        ]
        if not waiting:
            self._reloading = False
            for w in self._workers.values():
                w.hangup_sent_at = None
            self.notifier.send("READY=1", *self._status_field())

    def stopping(self) -> None:
        self.notifier.send("STOPPING=1", "STATUS=draining")

    def due(self) -> float | None:
        """When ``tick`` has something to do next (monotonic), None: never."""
        if not self.notifier.enabled:
            return None
        deadlines = [self._next]
        if self.notifier.watchdog_s:
            deadlines += [
                w.seen + self.notifier.watchdog_s
                for w in self._workers.values()
                if w.listening and not w.unresponsive
            ]
        return min(deadlines)

    def tick(self) -> list[tuple[int, int, float]]:
        """Pings (and a changed status) when due; returns (index, pid, silent seconds) of
        each worker to kill: listened, then silent for a whole watchdog period."""
        if not self.notifier.enabled:
            return []
        now = self._clock()
        wd = self.notifier.watchdog_s
        if now >= self._next:
            ping = ["WATCHDOG=1"] if wd else []
            self.notifier.send(*ping, *self._status_field(changed_only=True))
            self._next = now + (wd / 2 if wd else STATUS_INTERVAL_S)
        if not wd:
            return []
        stuck = []
        for index, w in self._workers.items():
            if w.listening and not w.unresponsive and now - w.seen >= wd:
                w.unresponsive = True
                stuck.append((index, w.pid, now - w.seen))
        return stuck
