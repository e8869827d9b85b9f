"""Several processes per node: `python -m engine serve --processes N` as ops run it, a
supervisor and its workers as real subprocesses on 127.0.0.1 (engine.server.supervisor).

Every wait is on a condition (a log line, a status answer, a process exit) with a
deadline; every process group started here is killed at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from serving import ENGINE_ON

from engine.tools.pki import init, update_trust_list
from engine.verdicts import Verdict
from engine.wire.client import Client

DEADLINE_S = 60.0


class Fleet:
    """`python -m engine serve --processes N` in a session (process group) of its own;
    its JSON log lines, every worker's included, are kept in ``log``."""

    def __init__(self, pki, tmp_path, *flags, processes=2, metrics_port=0, loop="uvloop"):
        cfg = tmp_path / "engine.toml"
        cfg.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = 0\n[metrics]\nport = {metrics_port}\n'
            f'[trust]\nroot_public_key = "{pki.root_public_key.hex()}"\n'
            f'trust_list = "{pki.trust_list_path}"\n'
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *ENGINE_ON[loop],
                "serve",
                "--config",
                str(cfg),
                "--processes",
                str(processes),
                *flags,
            ],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # the supervisor and its workers: one group to kill
        )
        self.log: list[dict] = []
        self._changed = threading.Condition()
        self._ended = False
        threading.Thread(target=self._read, daemon=True).start()
        self.processes = processes
        listening = [self.wait_for("listening", worker=k) for k in range(processes)]
        self.port = int(listening[0]["address"].rsplit(":", 1)[1])
        assert {int(e["address"].rsplit(":", 1)[1]) for e in listening} == {self.port}

    def _read(self) -> None:
        for line in self.proc.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "unparsed", "line": line}
            with self._changed:
                self.log.append(event)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def events(self, name: str, **match) -> list[dict]:
        with self._changed:
            return [
                e
                for e in self.log
                if e.get("event") == name and all(e.get(k) == v for k, v in match.items())
            ]

    def wait_for(self, name: str, timeout: float = DEADLINE_S, **match) -> dict:
        """The first line of event ``name`` whose fields include ``match``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = self.events(name, **match)
                if found:
                    return found[0]
                if self._ended:
                    raise AssertionError(f"server exited before {name} {match}: {self.log}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {name} {match} in time: {self.log}")
                self._changed.wait(left)

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def kill_group(self) -> None:
        """Whatever is left of the session: the supervisor and any worker."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(30)
        finally:
            self.kill_group()
            self.proc.wait(30)


@pytest.fixture
def fleet(pki, tmp_path):
    started: list[Fleet] = []

    def start(*flags, pki=pki, **kwargs) -> Fleet:
        f = Fleet(pki, tmp_path, *flags, **kwargs)
        started.append(f)
        return f

    try:
        yield start
    finally:
        for f in started:
            f.stop()


def now_ms() -> int:
    return int(time.time() * 1000)


async def one_per_worker(port: int, processes: int = 2, ssl=None) -> dict[int, tuple[Client, dict]]:
    """A connection to each worker, with the status it answered: connections are opened
    until the kernel has given one to every worker (SO_REUSEPORT spreads them)."""
    held: dict[int, tuple[Client, dict]] = {}
    deadline = time.monotonic() + DEADLINE_S
    while len(held) < processes:
        assert time.monotonic() < deadline, f"workers seen: {sorted(held)}"
        client = await Client.connect("127.0.0.1", port, ssl=ssl)
        status = await client.status()
        if status["worker"] in held:
            await client.close()
        else:
            held[status["worker"]] = (client, status)
    return held


async def close_all(held) -> None:
    for client, _ in held.values():
        with contextlib.suppress(Exception):
            await client.close()


def test_every_worker_serves_on_one_port(fleet, server_loop, scenarios):
    f = fleet(loop=server_loop)

    async def go():
        held = await one_per_worker(f.port)
        try:
            for index, (client, status) in held.items():
                assert status["processes"] == 2
                assert status["pid"] == f.wait_for("listening", worker=index)["pid"]
                (p,) = scenarios.presentations([Verdict.OK], now_ms())
                assert (await client.verify(p)).verdict is Verdict.OK
            return {status["pid"] for _, status in held.values()}
        finally:
            await close_all(held)

    pids = asyncio.run(asyncio.wait_for(go(), DEADLINE_S))
    assert len(pids) == 2 and f.proc.pid not in pids  # the supervisor serves nothing
    started = f.events("worker_started")
    assert {(e["worker"], e["pid"]) for e in started} == {
        (e["worker"], e["pid"]) for e in f.events("listening")
    }


def test_every_worker_serves_tls_on_one_port(fleet, scenarios, tmp_path):
    import ssl

    import trustme

    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    f = fleet("--set", f"server.tls_cert={pem}", "--set", f"server.tls_key={pem}")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)

    async def go():
        held = await one_per_worker(f.port, ssl=ctx)
        try:
            for client, _ in held.values():
                (p,) = scenarios.presentations([Verdict.OK], now_ms())
                assert (await client.verify(p)).verdict is Verdict.OK
        finally:
            await close_all(held)

    asyncio.run(asyncio.wait_for(go(), DEADLINE_S))


def test_a_killed_worker_is_restarted_and_the_other_keeps_serving(fleet, scenarios):
    f = fleet()

    async def go():
        held = await one_per_worker(f.port)
        try:
            victim = held[0][1]["pid"]
            survivor_client, survivor = held[1]
            os.kill(victim, signal.SIGKILL)
            loop = asyncio.get_running_loop()
            exited = await loop.run_in_executor(None, lambda: f.wait_for("worker_exited"))
            assert (exited["worker"], exited["pid"]) == (0, victim)
            assert exited["status"] == "killed by SIGKILL"
            assert exited["restart_in_s"] is not None
            # The other worker never stopped serving, on the connection it had.
            (p,) = scenarios.presentations([Verdict.OK], now_ms())
            assert (await survivor_client.verify(p)).verdict is Verdict.OK
            assert (await survivor_client.status())["pid"] == survivor["pid"]
            started = await loop.run_in_executor(None, _second_listening, f, 0)
            assert started["pid"] not in (victim, survivor["pid"])
            assert f.events("worker_started", worker=0)[-1]["pid"] == started["pid"]
            # New connections reach the new worker.
            again = await one_per_worker(f.port)
            try:
                assert again[0][1]["pid"] == started["pid"]
                assert again[1][1]["pid"] == survivor["pid"]
                (p,) = scenarios.presentations([Verdict.OK], now_ms())
                assert (await again[0][0].verify(p)).verdict is Verdict.OK
            finally:
                await close_all(again)
        finally:
            await close_all(held)

    asyncio.run(asyncio.wait_for(go(), DEADLINE_S))
    assert f.proc.poll() is None


def _second_listening(f: Fleet, worker: int) -> dict:
    """The `listening` line of worker ``worker``'s second process."""
    deadline = time.monotonic() + DEADLINE_S
    with f._changed:
        while len(f.events("listening", worker=worker)) < 2:
            assert time.monotonic() < deadline and not f._ended, f.log
            f._changed.wait(deadline - time.monotonic())
        return f.events("listening", worker=worker)[1]


def test_sighup_reloads_every_worker(fleet, tmp_path):
    own = init(tmp_path / "own-pki")
    f = fleet(pki=own)
    update_trust_list(own, channel_status={})
    f.signal(signal.SIGHUP)
    for k in range(2):
        reloaded = f.wait_for("reloaded", worker=k)
        assert (reloaded["what"], reloaded["sequence"]) == ("trust_list", 2)

    async def go():
        held = await one_per_worker(f.port)
        try:
            return [(await client.status())["trust_list_sequence"] for client, _ in held.values()]
        finally:
            await close_all(held)

    assert asyncio.run(asyncio.wait_for(go(), DEADLINE_S)) == [2, 2]


def test_sigterm_drains_every_worker_and_exits_0(fleet, scenarios):
    f = fleet("--set", "server.max_in_flight_per_connection=5000", "--set", "server.max_queue_ms=0")
    per_worker = 300

    async def go():
        held = await one_per_worker(f.port)
        tasks = []
        for client, _ in held.values():
            batch = scenarios.presentations([Verdict.OK] * per_worker, now_ms())
            tasks += [asyncio.ensure_future(client.verify(p)) for p in batch]
        await asyncio.sleep(0)  # every request written
        for client, _ in held.values():
            await client.ping()  # answered after the worker has read all of them
        f.signal(signal.SIGTERM)
        results = await asyncio.gather(*tasks)
        await close_all(held)
        return results

    results = asyncio.run(asyncio.wait_for(go(), DEADLINE_S))
    assert [r.verdict for r in results] == [Verdict.OK] * (2 * per_worker)
    assert f.proc.wait(30) == 0
    for k in range(2):
        assert f.wait_for("stopped", worker=k)["unanswered"] == 0
        assert f.wait_for("worker_exited", worker=k)["code"] == 0
    assert len(f.events("worker_started")) == 2  # nothing restarted during the stop
    f.wait_for("supervisor_stopped")
    with pytest.raises(ProcessLookupError):  # no worker outlives its supervisor
        os.killpg(f.proc.pid, 0)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_one_metrics_endpoint_shows_every_worker(fleet, scenarios):
    from prometheus_client.parser import text_string_to_metric_families

    f = fleet(metrics_port=_free_port())
    metrics = f.wait_for("supervisor_started")["metrics"]
    sent = {0: 3, 1: 5}

    async def go():
        held = await one_per_worker(f.port)
        try:
            for k, n in sent.items():
                batch = scenarios.presentations([Verdict.OK] * n, now_ms())
                results = await held[k][0].verify_batch(batch)
                assert [r.verdict for r in results] == [Verdict.OK] * n
        finally:
            await close_all(held)

    asyncio.run(asyncio.wait_for(go(), DEADLINE_S))
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=30) as response:
        text = response.read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    for k, n in sent.items():
        ok = ("essc_verifications_total", (("verdict", "OK"), ("worker", str(k))))
        assert samples[ok] == n
        assert samples[("essc_supervisor_worker_up", (("worker", str(k)),))] == 1
        assert samples[("essc_trust_list_sequence", (("worker", str(k)),))] == 1
    assert samples[("essc_supervisor_workers", ())] == 2
    assert samples[("essc_supervisor_restarts_total", ())] == 0


def test_a_presentation_is_accepted_once_across_workers(fleet, scenarios):
    f = fleet()

    async def go():
        held = await one_per_worker(f.port)
        try:
            (p,) = scenarios.presentations([Verdict.OK], now_ms())
            return sorted([(await client.verify(p)).verdict for client, _ in held.values()])
        finally:
            await close_all(held)

    assert asyncio.run(asyncio.wait_for(go(), DEADLINE_S)) == [Verdict.OK, Verdict.REPLAYED]


def test_bad_configuration_stops_the_supervisor_before_any_worker(pki):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "--processes",
            "2",
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--trust-list",
            str(pki.trust_list_path),
            "--root-key",
            "00" * 32,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "error: " in proc.stderr and "root signature does not verify" in proc.stderr
    assert "worker_started" not in proc.stderr and "Traceback" not in proc.stderr


def test_workers_failing_at_start_back_off_then_the_supervisor_gives_up(fleet, tmp_path):
    from engine.server import supervisor

    own = init(tmp_path / "own-pki")
    f = fleet(pki=own)
    # Ready as the supervisor sees it (its listening report read), so the kill is a
    # restart and not a failed start of its own.
    victim = f.wait_for("worker_ready", worker=0)["pid"]
    own.trust_list_path.write_bytes(b"not a trust list")  # what a new worker would load
    os.kill(victim, signal.SIGKILL)
    assert f.proc.wait(DEADLINE_S) == 2
    gave_up = f.wait_for("supervisor_gave_up")
    assert "worker 0 failed at start" in gave_up["reason"]
    exits = f.events("worker_exited", worker=0)
    assert len(exits) == 1 + supervisor.MAX_START_FAILURES  # the kill, then each failed start
    assert all(not e["listened"] for e in exits[1:])
    delays = [e["restart_in_s"] for e in exits[:-1]]
    assert delays == sorted(delays) and delays[0] < delays[-1]  # backing off, not spinning
    assert exits[-1]["restart_in_s"] is None
    assert len(f.events("worker_failed", worker=0)) == supervisor.MAX_START_FAILURES
    # The healthy worker was drained, not abandoned.
    assert f.wait_for("stopped", worker=1)["unanswered"] == 0
    assert any("error: worker 0 failed at start" in e.get("line", "") for e in f.log)
