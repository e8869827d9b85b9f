"""Several serving processes per node: a supervisor and its workers (``server.processes``).

One Python process serves one event loop; past a few cores the loop, not the
cryptography, is what limits a node.  With ``server.processes`` N > 1 (0: one per
core) ``python -m engine serve`` runs this supervisor, which serves nothing itself:

- it validates the configuration and opens every data file once, so that a bad
  setting or file is one ``error:`` line and exit status 2 before anything is forked;
- it reserves the port: a socket bound with SO_REUSEPORT and never listening, kept for
  its lifetime, so port 0 is resolved once and every worker (each binding its own
  listener with SO_REUSEPORT, the kernel spreading connections among them) gets the
  same one, a restarted worker included;
- it forks the workers (fork, not spawn: the replay table the workers share is made
  here before the fork and inherited; each worker loads the trust list and maps the
  revocation data itself, the mapped pages being one page-cache copy per host either
  way).  It forks again to restart one, so it never starts a thread: everything here
  runs on one thread around one ``selectors`` loop;
- it restarts a worker that exits while not stopping, with backoff; it gives up (exit
  status 2) when a worker fails at start ``MAX_START_FAILURES`` times in a row;
- it forwards SIGHUP to every worker, and SIGTERM / SIGINT as SIGTERM, waits for them
  to drain (``server.drain_timeout_s`` + ``STOP_MARGIN_S``, then SIGKILL) and exits 0;
- it is what systemd sees (``NotifyAccess=main``): READY=1 when every worker first
  listens, RELOADING=1 / READY=1 around a forwarded SIGHUP, STOPPING=1, a STATUS, and
  with ``$WATCHDOG_USEC`` pings from this loop while it kills a worker whose loop fell
  silent on the report pipe (``engine.server.notify``, "Under a supervisor");
- it serves the node's one metrics endpoint (``metrics.host:metrics.port``): each
  worker serves its registry on a loopback port of its own, which it reports here
  through a pipe once it is listening; a scrape here fetches every worker's
  exposition and merges them, each sample labelled ``worker="k"``, with the
  supervisor's own (``engine.server.metrics.merge_expositions``).

docs/OPERATIONS.md, "Several processes per node", is the operator's side of this.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import http.client
import json
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType

from engine import _core
from engine.errors import EsscError
from engine.replay import MemoryReplayCache, ReplayStore
from engine.server import logs, notify
from engine.server.config import Config
from engine.server.metrics import merge_expositions, supervisor_families
from engine.server.reload import open_revocation, open_trust
from engine.server.server import Server, WorkerProcess, run, tls_context

__all__ = ["Supervisor", "SupervisorError", "processes", "supervise"]

STOP_MARGIN_S = 5.0  # beyond server.drain_timeout_s before a worker is killed
BACKOFF_BASE_S = 0.25  # a worker that died young waits this, doubled each time ...
BACKOFF_MAX_S = 30.0  # ... up to this, before it is started again
STABLE_S = 10.0  # a worker that served this long died of something new: restart at once
MAX_START_FAILURES = 5  # a worker that exits before it listens, this often in a row: give up
SCRAPE_TIMEOUT_S = 2.0  # one scrape of the metrics endpoint, all workers together
EXIT_GAVE_UP = 2  # the command line's "could not run"

_log = logs.event


class SupervisorError(EsscError):
    """The supervisor cannot serve (its port, or workers that keep failing at start)."""


def processes(cfg: Config) -> int:
    """``server.processes`` resolved: 0 is one per core."""
    return cfg.server.processes or _core.cpu_count()


def _shared_replay_table(cfg: Config) -> ReplayStore | None:
    """The replay store the workers share, made before they are forked: one native table
    in shared memory (a nonce is accepted by one worker of the host only); None when a
    Redis store is configured (each worker connects to it after the fork)."""
    if cfg.replay.redis_url or cfg.replay.redis_cluster_nodes:
        return None
    return MemoryReplayCache(cfg.verification.replay_capacity, shared=True)


def _check(cfg: Config) -> None:
    """Everything a worker opens at start, opened once here: a bad file or setting stops
    the supervisor before any fork, as it stops a single process."""
    _, trust = open_trust(cfg)
    store = open_revocation(cfg, trust)
    del store  # the workers map their own; this one is unmapped now
    tls_context(cfg.server)


def _reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to the serving address with SO_REUSEPORT and never listening: it
    fixes port 0 for every worker, and holds the port while workers restart."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise SupervisorError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def _metrics_listener(host: str, port: int) -> socket.socket:
    try:
        sock = socket.create_server((host, port), family=_family(host), backlog=64)
    except OSError as e:
        raise SupervisorError(f"metrics on {host}:{port}: {e.strerror}") from None
    sock.setblocking(False)
    return sock


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _describe(status: int) -> tuple[int, str]:
    """(exit code, or minus the signal number; words) of a wait status."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return code, f"killed by {signal.Signals(-code).name}"
    return code, f"exited {code}"


class _Slot:
    """One worker's place: index k is served by one process at a time."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.pid: int | None = None
        self.started_at = 0.0
        self.ready = False
        self.metrics_port: int | None = None
        self.report: int | None = None  # the read end of the worker's report pipe
        self.report_buffer = b""
        self.quick_deaths = 0  # in a row, each within STABLE_S of its start
        self.start_failures = 0  # in a row, each before the worker listened
        self.restart_at: float | None = None


class Supervisor:
    """Runs ``processes(cfg)`` workers until SIGTERM or SIGINT (``run``)."""

    def __init__(self, cfg: Config, *, ready: Callable[[int, int | None], None] | None = None):
        """``ready(port, metrics_port)`` is called once, when every worker first listens."""
        self.cfg = cfg.validate()
        self.processes = processes(cfg)
        self._ready = ready
        self.slots = [_Slot(k) for k in range(self.processes)]
        self.restarts = 0
        self.stopping = False
        self._gave_up: str | None = None
        self._stop_deadline = 0.0
        self._signals: collections.deque[int] = collections.deque()
        self._selector = selectors.DefaultSelector()
        self._owned: list[socket.socket] = []  # closed in every worker after the fork
        self._metrics: socket.socket | None = None
        self._replay: ReplayStore | None = None
        self.port = 0
        self.metrics_port: int | None = None
        self._pid = os.getpid()
        self._notify = notify.Supervised(notify.Notifier.from_environ(), self.processes)

    # --- life cycle ---------------------------------------------------------------------

    def run(self) -> int:
        """Serves until stopped; 0 after a stop, or raises SupervisorError on giving up."""
        cfg = self.cfg
        _check(cfg)
        s, m = cfg.server, cfg.metrics
        reserved = _reserve_port(s.host, s.port)
        self._owned.append(reserved)
        self.port = reserved.getsockname()[1]
        cfg.server.port = self.port  # the workers bind the port reserved
        cfg.server.processes = self.processes
        if m.port:
            self._metrics = _metrics_listener(m.host, m.port)
            self._owned.append(self._metrics)
            self.metrics_port = self._metrics.getsockname()[1]
            self._selector.register(self._metrics, selectors.EVENT_READ, "metrics")
        wake_r, wake_w = socket.socketpair()
        self._owned += [wake_r, wake_w]
        for sock in (wake_r, wake_w):
            sock.setblocking(False)
        self._selector.register(wake_r, selectors.EVENT_READ, "wake")
        signal.set_wakeup_fd(wake_w.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        self._replay = _shared_replay_table(cfg)
        _log(
            logging.INFO,
            "supervisor_started",
            address=f"{s.host}:{self.port}",
            metrics=f"{m.host}:{self.metrics_port}" if m.port else None,
            processes=self.processes,
            pid=os.getpid(),
        )
        try:
            for slot in self.slots:
                self._start(slot)
            self._loop(wake_r)
        finally:
            signal.set_wakeup_fd(-1)
            for sock in self._owned:
                sock.close()
            self._selector.close()
        _log(logging.INFO, "supervisor_stopped", restarts=self.restarts)
        if self._gave_up is not None:
            raise SupervisorError(self._gave_up)
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)  # handled by the loop; the wakeup fd wakes it

    def _loop(self, wake: socket.socket) -> None:
        while True:
            for key, _ in self._selector.select(self._timeout()):
                if key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        while wake.recv(4096):
                            pass
                elif key.data == "metrics":
                    self._scrape()
                else:
                    self._read_report(key.data)
            while self._signals:
                self._signal(self._signals.popleft())
            self._reap()
            now = time.monotonic()
            if self.stopping:
                if all(slot.pid is None for slot in self.slots):
                    return
                if now >= self._stop_deadline:
                    self._kill_remaining()
                continue
            for index, pid, silent in self._notify.tick():
                self._unresponsive(self.slots[index], pid, silent)
            for slot in self.slots:
                if slot.pid is None and slot.restart_at is not None and now >= slot.restart_at:
                    self._start(slot)

    def _timeout(self) -> float | None:
        now = time.monotonic()
        if self.stopping:
            return max(0.0, self._stop_deadline - now)
        due = [s.restart_at for s in self.slots if s.pid is None and s.restart_at is not None]
        watch = self._notify.due()  # the next ping, or a worker's silence running out
        if watch is not None:
            due.append(watch)
        return max(0.0, min(due) - now) if due else None

    def _signal(self, sig: int) -> None:
        if sig == signal.SIGCHLD:
            return  # reaped after every wake-up
        if sig == signal.SIGHUP:
            self._notify.hangup()  # before sending: the time the workers' reports follow
            pids = self._send(signal.SIGHUP)
            _log(logging.INFO, "signal_forwarded", signal="SIGHUP", workers=pids)
        elif not self.stopping:
            self._stop(f"{signal.Signals(sig).name}")

    def _send(self, sig: int) -> list[int]:
        sent = []
        for slot in self.slots:
            if slot.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, sig)
                    sent.append(slot.pid)
        return sent

    def _stop(self, why: str) -> None:
        self.stopping = True
        self._stop_deadline = time.monotonic() + self.cfg.server.drain_timeout_s + STOP_MARGIN_S
        for slot in self.slots:
            slot.restart_at = None
        pids = self._send(signal.SIGTERM)
        self._notify.stopping()
        _log(logging.INFO, "supervisor_stopping", why=why, workers=pids)

    def _kill_remaining(self) -> None:
        for pid in self._send(signal.SIGKILL):
            _log(logging.WARNING, "worker_killed", pid=pid, why="not stopped in time")
        for slot in self.slots:
            if slot.pid is not None:
                with contextlib.suppress(ChildProcessError):
                    self._exited(slot, os.waitpid(slot.pid, 0)[1])

    # --- workers ------------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        # Forking is only safe while this process has one thread (it never starts one).
        if threading.active_count() != 1:
            raise RuntimeError(f"threads running in the supervisor: {threading.enumerate()}")
        read, write = os.pipe()
        slot.restart_at, slot.ready, slot.metrics_port = None, False, None
        slot.started_at = time.monotonic()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            os.close(read)
            self._worker(slot.index, write)
        os.close(write)
        slot.pid, slot.report, slot.report_buffer = pid, read, b""
        self._notify.started(slot.index, pid)
        os.set_blocking(read, False)
        self._selector.register(read, selectors.EVENT_READ, slot)
        _log(logging.INFO, "worker_started", worker=slot.index, pid=pid)

    def _worker(self, index: int, report: int) -> None:
        """The forked worker: serves until stopped, then exits (``os._exit``)."""
        status = 70  # EX_SOFTWARE: a bug escaped
        # The report pipe stays open: the worker's loop reports on it while it serves,
        # never waiting on this process (non-blocking).
        os.set_blocking(report, False)
        process = WorkerProcess(
            index, self.processes, report=report, heartbeat_s=self._notify.heartbeat_s
        )
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            # Until the worker's loop takes them: a stop ends it (nothing is served
            # yet), a reload is made once it serves.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, lambda *_: setattr(process, "hangup_pending", True))
            self._selector.close()
            for sock in self._owned:
                sock.close()
            for slot in self.slots:
                if slot.report is not None:
                    os.close(slot.report)
            _exit_with_parent(self._pid)
            logs.context(worker=index)

            def listening(srv: Server) -> None:
                line = json.dumps({"metrics_port": srv.metrics_port}).encode() + b"\n"
                os.write(report, line)

            status = run(self.cfg, ready=listening, replay=self._replay, process=process)
        except (EsscError, OSError) as e:  # what stops a single process with status 2
            _log(logging.ERROR, "worker_failed", error=str(e))
            status = 2
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(status)

    def _read_report(self, slot: _Slot) -> None:
        assert slot.report is not None
        try:
            data = os.read(slot.report, 4096)
        except BlockingIOError:
            return
        slot.report_buffer += data
        *lines, slot.report_buffer = slot.report_buffer.split(b"\n")
        for line in lines:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if not isinstance(doc, dict):
                continue
            self._notify.report(slot.index, doc)  # the serving state, proof of a live loop
            if "metrics_port" not in doc or slot.ready:
                continue
            slot.ready = True  # its listening line
            slot.start_failures = 0
            slot.metrics_port = doc["metrics_port"]
            # From here on an exit is a restart, not a failed start.
            _log(logging.INFO, "worker_ready", worker=slot.index, pid=slot.pid)
            if all(s.ready for s in self.slots):
                self._notify.all_listening()
                if self._ready is not None:
                    ready, self._ready = self._ready, None
                    ready(self.port, self.metrics_port)
        if not data:  # the worker exited (or closed its end)
            self._close_report(slot)

    def _close_report(self, slot: _Slot) -> None:
        if slot.report is not None:
            self._selector.unregister(slot.report)
            os.close(slot.report)
            slot.report = None

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for slot in self.slots:
                if slot.pid == pid:
                    self._exited(slot, status)

    def _exited(self, slot: _Slot, status: int) -> None:
        if slot.report is not None:  # a report written just before dying still counts
            self._read_report(slot)
            self._close_report(slot)
        pid, slot.pid = slot.pid, None
        self._notify.exited(slot.index)
        code, words = _describe(status)
        if self.stopping:
            level = logging.INFO if code == 0 else logging.WARNING
            _log(level, "worker_exited", worker=slot.index, pid=pid, status=words, code=code)
            return
        lived = time.monotonic() - slot.started_at
        slot.quick_deaths = slot.quick_deaths + 1 if lived < STABLE_S else 0
        if not slot.ready:
            slot.start_failures += 1
        delay = 0.0
        if slot.quick_deaths:
            delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (slot.quick_deaths - 1))
        giving_up = slot.start_failures >= MAX_START_FAILURES
        _log(
            logging.ERROR,
            "worker_exited",
            worker=slot.index,
            pid=pid,
            status=words,
            code=code,
            listened=slot.ready,
            restart_in_s=None if giving_up else delay,
        )
        if giving_up:
            self._gave_up = (
                f"worker {slot.index} failed at start {slot.start_failures} times in a row "
                f"(last: {words}); its log lines say why"
            )
            _log(logging.ERROR, "supervisor_gave_up", reason=self._gave_up)
            self._stop("workers fail at start")
            return
        self.restarts += 1
        slot.restart_at = time.monotonic() + delay

    def _unresponsive(self, slot: _Slot, pid: int, silent: float) -> None:
        """A worker that listened and then fell silent for a whole watchdog period: its
        loop is stuck (a thread could not tell), so it is killed and, as after any
        exit, started again."""
        if slot.pid != pid:
            return
        _log(
            logging.ERROR,
            "worker_unresponsive",
            worker=slot.index,
            pid=pid,
            silent_s=round(silent, 3),
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    # --- metrics ------------------------------------------------------------------------

    def _scrape(self) -> None:
        """One request to the metrics endpoint, answered here (bounded in time: this
        loop is the supervisor's only thread)."""
        assert self._metrics is not None
        try:
            conn, _ = self._metrics.accept()
        except BlockingIOError:
            return
        deadline = time.monotonic() + SCRAPE_TIMEOUT_S
        with conn:
            try:
                conn.setblocking(True)
                conn.settimeout(SCRAPE_TIMEOUT_S)
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 8192:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                if not request.startswith((b"GET ", b"HEAD ")):
                    conn.sendall(b"HTTP/1.0 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                    return
                body = self.exposition(deadline)
                head = (
                    "HTTP/1.0 200 OK\r\n"
                    "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                conn.sendall(head if request.startswith(b"HEAD ") else head + body)
            except OSError:  # the scraper went away or stalled: its loss
                return

    def exposition(self, deadline: float) -> bytes:
        """Every worker's metrics (a worker that does not answer in time: up 0) and the
        supervisor's own, as one Prometheus text exposition."""
        texts: dict[int, str | None] = {}
        for slot in self.slots:
            texts[slot.index] = None
            left = deadline - time.monotonic()
            if slot.pid is None or slot.metrics_port is None or left <= 0:
                continue
            texts[slot.index] = _fetch(slot.metrics_port, left)
        alive = sum(slot.pid is not None for slot in self.slots)
        own = supervisor_families(self.processes, alive, self.restarts, texts)
        return merge_expositions(texts, own)


def _fetch(port: int, timeout: float) -> str | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read()
        return body.decode() if response.status == 200 else None
    except (OSError, http.client.HTTPException, UnicodeDecodeError):
        return None
    finally:
        conn.close()


def _exit_with_parent(supervisor: int) -> None:
    """A worker whose supervisor dies (killed, say) is sent SIGTERM, so it drains and
    exits rather than serving on unsupervised (Linux: PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != supervisor:  # it died before that took effect
        os.kill(os.getpid(), signal.SIGTERM)


def supervise(cfg: Config, *, ready: Callable[[int, int | None], None] | None = None) -> int:
    """``python -m engine serve`` with ``server.processes`` other than 1."""
    return Supervisor(cfg, ready=ready).run()
