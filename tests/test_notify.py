"""The systemd notify protocol as the engine speaks it (engine.server.notify), heard on a
real AF_UNIX datagram socket playing the service manager: the server in-process (a
socket path, and an abstract one), and `python -m engine serve` as a subprocess, alone
and under its supervisor.

No sleep synchronises anything: every wait is a receive on the socket, a log line or
a process exit, with a deadline.  The one fixed window is an observation: while the
test holds the event loop, no watchdog ping arrives for ten ping periods.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import uuid

import pytest
from revocation_helpers import snapshot
from serving import ENGINE_ON, LogEvents, ServerThread, server_config
from test_supervisor import Fleet

from engine.revocation.build import Signer
from engine.server.notify import Notifier, Serving, monotonic_usec, status_line
from engine.tools.pki import init, update_trust_list
from engine.tools.processes import free_port

DEADLINE_S = 60.0
HELD_S = 1.0  # the loop held this long: ten ping periods at WATCHDOG_USEC=200000
CARDS = [b"G12345678"]


class Manager:
    """The service manager's end of NOTIFY_SOCKET: a datagram socket that also learns
    each sender's pid (SO_PASSCRED), as systemd does for NotifyAccess=main."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)

    def recv(self, timeout: float) -> tuple[dict[str, str], int] | None:
        """One message's fields and its sender's pid; None when nothing came in time."""
        self.sock.settimeout(timeout)
        try:
            data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except (TimeoutError, BlockingIOError):
            return None
        pid = 0
        for level, kind, value in ancillary:
            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS):
                pid = struct.unpack("iII", value[:12])[0]
        fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
        return fields, pid

    def wait(self, name: str, timeout: float = DEADLINE_S) -> list[tuple[dict[str, str], int]]:
        """Messages up to and including the first one carrying field ``name``."""
        seen = []
        while True:
            got = self.recv(timeout)
            assert got is not None, f"no {name} in {timeout} s; got {seen}"
            seen.append(got)
            if name in got[0]:
                return seen

    def drain(self) -> list[tuple[dict[str, str], int]]:
        """Everything already queued (a sendto to a datagram socket queues at once)."""
        out = []
        while (got := self.recv(0)) is not None:
            out.append(got)
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def manager(tmp_path, monkeypatch):
    """A Manager on a socket path in tmp_path, named by NOTIFY_SOCKET; no watchdog."""
    m = Manager(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", m.address)
    for name in ("WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    yield m
    m.close()


def fields_of(messages) -> list[dict[str, str]]:
    return [f for f, _ in messages]


def lag_above(srv: ServerThread, seconds: float) -> float:
    """Lag samples counted above ``seconds`` (a bucket bound) so far."""
    registry = srv.server.metrics.registry
    name = "essc_event_loop_lag_seconds_bucket"
    total = registry.get_sample_value(name, {"le": "+Inf"})
    return total - registry.get_sample_value(name, {"le": repr(float(seconds))})


# --- the protocol's pieces ---------------------------------------------------------------


def test_without_notify_socket_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    n = Notifier.from_environ()
    assert not n.enabled and n.watchdog_s is None
    assert n.send("READY=1") is False


def test_a_watchdog_meant_for_another_process_is_not_this_ones(manager, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier.from_environ().watchdog_s is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier.from_environ().watchdog_s == 3.0
    monkeypatch.delenv("WATCHDOG_PID")
    assert Notifier.from_environ().watchdog_s == 3.0


def test_status_lines():
    alone = status_line([Serving(3, 12, 42)])
    assert alone == "serving: trust list 3, revocation 12, 42 connections"
    assert status_line([Serving(3, None, 1, draining=True)]) == (
        "draining: trust list 3, revocation none, 1 connection"
    )
    mid_reload = [Serving(3, 12, 1), Serving(4, 12, 2)]
    assert status_line(mid_reload, " 2/2 workers") == (
        "serving 2/2 workers: trust list 3/4, revocation 12, 3 connections"
    )


# --- in-process ---------------------------------------------------------------------------


def test_ready_status_reload_and_stopping(manager, pki, server_loop, tmp_path):
    signer = Signer.from_file(pki.publisher_key_path)
    snap = snapshot(tmp_path, "rev.snap", cards=CARDS, signer=signer, sequence=7)
    cfg = server_config(pki, **{"revocation.snapshot": str(snap)})
    with LogEvents() as log:
        srv = ServerThread(cfg, loop=server_loop)
        try:
            (ready,) = fields_of(manager.wait("READY"))
            # Sent on the loop right after the listening line, which this handler saw.
            assert log.named("listening")
            trust = srv.server.verifier.trust_list.sequence
            assert ready == {
                "READY": "1",
                "STATUS": f"serving: trust list {trust}, revocation 7, 0 connections",
            }
            with socket.create_connection(("127.0.0.1", srv.port), timeout=DEADLINE_S):
                # A reload (SIGHUP's handler, called as the signal would) of new data.
                snapshot(tmp_path, "rev.snap", cards=CARDS, signer=signer, sequence=8)
                before = monotonic_usec()
                srv.loop.call_soon_threadsafe(srv.server.hangup)
                reloading, *_, done = fields_of(manager.wait("READY"))
                assert reloading["RELOADING"] == "1"
                assert before <= int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
                assert done["STATUS"] == f"serving: trust list {trust}, revocation 8, 1 connection"
                assert log.named("reloaded")[0]["sequence"] == 8

                # A reload that fails ends too: READY, the data in service unchanged.
                snap.write_bytes(b"not a revocation file")
                srv.loop.call_soon_threadsafe(srv.server.hangup)
                reloading, *_, done = fields_of(manager.wait("READY"))
                assert "RELOADING" in reloading
                assert log.named("reload_failed")
                assert "revocation 8," in done["STATUS"]
        finally:
            srv.stop()
    assert "STOPPING" in fields_of(manager.wait("STOPPING"))[-1]


def test_the_watchdog_is_fed_by_the_loop_and_stops_while_it_is_held(pki, server_loop, monkeypatch):
    manager = Manager(f"@essc-test-notify-{uuid.uuid4().hex}")  # the abstract namespace
    monkeypatch.setenv("NOTIFY_SOCKET", manager.address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping every 100 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    srv = ServerThread(server_config(pki), loop=server_loop)
    held, holding = threading.Event(), threading.Event()

    def hold() -> None:  # a blocking call on the loop, released by the test
        holding.set()
        held.wait(DEADLINE_S)

    try:
        manager.wait("READY")
        for _ in range(3):
            ((fields, pid),) = manager.wait("WATCHDOG")[-1:]
            assert fields["WATCHDOG"] == "1" and pid == os.getpid()
        # A loop with nothing to do runs a callback at once (the fine buckets).
        assert lag_above(srv, 0.01) < srv.server.metrics.registry.get_sample_value(
            "essc_event_loop_lag_seconds_count"
        )

        srv.loop.call_soon_threadsafe(hold)
        assert holding.wait(DEADLINE_S)
        manager.drain()  # sent before the loop was held
        long_lags = lag_above(srv, 0.5)
        assert manager.recv(HELD_S) is None, "a ping while the loop was held"
        held.set()
        ((fields, _),) = manager.wait("WATCHDOG")[-1:]  # pings resume
        # The tick that sent it measured the hold (HELD_S or more) first.
        assert lag_above(srv, 0.5) >= long_lags + 1
    finally:
        held.set()
        srv.stop()
        manager.close()


# --- `python -m engine serve` as systemd runs it ------------------------------------------


class Engine(Fleet):
    """`python -m engine serve` with the notify environment (Fleet's log reading)."""

    def __init__(self, pki, tmp_path, env, *, processes: int, wrapper=(), metrics_port=0, more=""):
        """``wrapper``: the command the engine runs under; ``more``: TOML appended."""
        self.port = free_port()
        cfg = tmp_path / "engine.toml"
        cfg.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {self.port}\nprocesses = {processes}\n'
            f"[metrics]\nport = {metrics_port}\n"
            f'[trust]\nroot_public_key = "{pki.root_public_key.hex()}"\n'
            f'trust_list = "{pki.trust_list_path}"\n{more}'
        )
        self.proc = subprocess.Popen(
            [*wrapper, sys.executable, *ENGINE_ON["uvloop"], "serve", "--config", str(cfg)],
            env={**os.environ, **env},
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.log: list[dict] = []
        self._changed = threading.Condition()
        self._ended = False
        threading.Thread(target=self._read, daemon=True).start()
        self.processes = processes

    def wait_until(self, condition, timeout: float = DEADLINE_S) -> None:
        with self._changed:
            assert self._changed.wait_for(condition, timeout), f"not in time: {self.log}"


@pytest.mark.parametrize("processes", [1, 2], ids=["alone", "supervised"])
def test_serve_under_systemd(tmp_path, processes):
    own = init(tmp_path / "pki")
    manager = Manager(str(tmp_path / "notify.sock"))
    watchdog_s = 3.0  # a worker is killed after this long silent: well above a busy host's hiccups
    env = {"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": str(int(watchdog_s * 1e6))}
    engine = Engine(own, tmp_path, env, processes=processes)
    main = engine.proc.pid
    workers = "" if processes == 1 else " 2/2 workers"
    try:
        ((ready, pid),) = manager.wait("READY")[-1:]
        # READY: every process listens (its STATUS counts each worker's own report).
        socket.create_connection(("127.0.0.1", engine.port), timeout=DEADLINE_S).close()
        assert pid == main
        assert ready["STATUS"] == f"serving{workers}: trust list 1, revocation none, 0 connections"
        for _ in range(2):
            ((_, pid),) = manager.wait("WATCHDOG")[-1:]
            assert pid == main

        update_trust_list(own, channel_status={})
        before = monotonic_usec()
        engine.signal(signal.SIGHUP)
        messages = manager.wait("READY")
        reloading = next(f for f, _ in messages if "RELOADING" in f)
        assert before <= int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
        # READY once every process has the new list (none still on 1).
        assert messages[-1][0]["STATUS"] == (
            f"serving{workers}: trust list 2, revocation none, 0 connections"
        )
        assert {pid for _, pid in messages} == {main}

        if processes == 2:
            # A worker whose loop stops (SIGSTOP) falls silent: the supervisor kills it
            # and starts another, while it keeps pinging systemd for the node.
            stuck = engine.wait_for("listening", worker=1)["pid"]
            os.kill(stuck, signal.SIGSTOP)
            pings = 0
            while not engine.events("worker_unresponsive", worker=1):
                got = manager.recv(DEADLINE_S)
                assert got is not None and got[1] == main
                pings += "WATCHDOG" in got[0]
            (event,) = engine.events("worker_unresponsive", worker=1)
            assert event["pid"] == stuck and event["silent_s"] >= watchdog_s
            assert pings >= 1
            exited = engine.wait_for("worker_exited", worker=1)
            assert exited["status"] == "killed by SIGKILL" and exited["listened"] is True
            engine.wait_until(
                lambda: any(e["pid"] != stuck for e in engine.events("listening", worker=1))
            )

        engine.signal(signal.SIGTERM)
        ((stopping, pid),) = manager.wait("STOPPING")[-1:]
        assert stopping["STOPPING"] == "1" and pid == main
        assert engine.proc.wait(DEADLINE_S) == 0
    finally:
        engine.stop()
        manager.close()
