"""engine.wire.pool.FleetClient against real engine servers on 127.0.0.1: spreading,
failover across a drain, endpoints that refuse or never answer, BUSY retried (whole
requests and single items of a batch), deadlines."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time

import numpy as np
import pytest
from serving import LogEvents, ServerThread, server_config

from engine.replay import FRESH, UNAVAILABLE, MemoryReplayCache
from engine.revocation.source import SetRevocation
from engine.tools.scenarios import BUILDABLE
from engine.verdicts import Result, Verdict
from engine.wire.pool import Endpoint, FleetClient, FleetUnavailable

# The subject is the client; the servers' two loops are test_server.py's business.
pytestmark = pytest.mark.server_loops("uvloop", reason="client-side behaviour")

CTX = {"merchant_id": "m-001", "terminal_id": "t-42"}
KINDS = [v for v in BUILDABLE if v is not Verdict.REPLAYED]


def now_ms() -> int:
    return int(time.time() * 1000)


def run(coro):
    # A safety net only: a hang fails the test instead of the suite.
    return asyncio.run(asyncio.wait_for(coro, 120))


def endpoint(srv) -> str:
    return f"127.0.0.1:{srv.port}"


def ok_count(srv) -> float:
    registry = srv.server.metrics.registry
    return registry.get_sample_value("essc_verifications_total", {"verdict": "OK"}) or 0.0


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Silent:
    """Accepts TCP connections and reads everything, answering nothing."""

    def __init__(self):
        self.received = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Silent:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer) -> None:
        while data := await reader.read(65536):
            self.received += len(data)
        writer.close()


def test_endpoints_parse():
    assert Endpoint.parse("10.1.2.3:7701") == Endpoint("10.1.2.3", 7701)
    assert Endpoint.parse("node-a") == Endpoint("node-a", 7700)
    assert Endpoint.parse("[::1]:7702") == Endpoint("::1", 7702)
    assert str(Endpoint("::1", 7702)) == "[::1]:7702"
    for bad in ("host:", "host:port", ":7700", "h:70000"):
        with pytest.raises(ValueError):
            Endpoint.parse(bad)
    with pytest.raises(ValueError):
        FleetClient([])


def test_verifies_spread_over_three_servers(start_server, scenarios):
    revocation = SetRevocation(scenarios.revoked_cards, scenarios.revoked_serials)
    servers = [start_server(revocation=revocation, server__max_queue_ms=0) for _ in range(3)]
    outcomes = KINDS * 6
    singles = scenarios.presentations(outcomes, now_ms())
    batch = scenarios.presentations(outcomes, now_ms())

    async def go():
        async with FleetClient([endpoint(s) for s in servers], connections=2, deadline=30) as fleet:
            assert await fleet.start() == 3
            results = await asyncio.gather(*(fleet.verify(p, context=CTX) for p in singles))
            assert [r.verdict for r in results] == outcomes
            ok = results[outcomes.index(Verdict.OK)]
            assert ok.claims["card_number"] and not ok.repeat
            assert [r.verdict for r in await fleet.verify_batch(batch, context=CTX)] == outcomes
            # Definitive verdicts, each asked once.
            c = fleet.counters
            assert c.calls == c.attempts == len(singles) + 1 and c.retries == 0
            assert all(ep.connected == 2 for ep in fleet.endpoints)

    run(go())
    # Every server took its share (round-robin: a third of the singles each).
    per_server = [ok_count(s) for s in servers]
    assert all(n >= outcomes.count(Verdict.OK) // 3 for n in per_server), per_server
    assert sum(per_server) == 2 * outcomes.count(Verdict.OK)


def test_a_server_drained_mid_stream_costs_no_verify(start_server, scenarios):
    servers = [start_server(server__max_queue_ms=0) for _ in range(3)]
    outcomes = [Verdict.OK, Verdict.EXPIRED, Verdict.OK, Verdict.BAD_HOLDER_SIGNATURE] * 75
    batch = scenarios.presentations(outcomes, now_ms())  # each one accepted once at most

    async def go():
        async with FleetClient([endpoint(s) for s in servers], deadline=30) as fleet:
            assert await fleet.start() == 3
            gate = asyncio.Semaphore(24)  # a stream: 24 in flight at any time
            done = 0
            drain: asyncio.Future | None = None
            draining = asyncio.Event()  # server 0 has begun to drain
            after = 0  # verifies sent once it had

            async def watch_drain():
                while not servers[0].server.draining:
                    await asyncio.sleep(0.001)
                draining.set()

            async def one(p: bytes):
                nonlocal done, drain, after
                async with gate:
                    if drain is not None:
                        # The rest of the stream goes on once the drain has begun, so
                        # it surely overlaps it.
                        await draining.wait()
                        after += 1
                    result = await fleet.verify(p, context=CTX)
                done += 1
                if done == 60:  # a fifth of the way: stop server 0 while traffic flows
                    drain = asyncio.ensure_future(asyncio.to_thread(servers[0].stop))
                    watcher.append(asyncio.ensure_future(watch_drain()))
                return result

            watcher: list[asyncio.Future] = []
            results = await asyncio.gather(*(one(p) for p in batch))
            await drain
            await asyncio.gather(*watcher)
            return results, fleet, after

    results, fleet, after = run(go())
    assert [r.verdict for r in results] == outcomes  # no BUSY, no REPLAYED, no error
    assert not servers[0].thread.is_alive()
    assert ok_count(servers[0]) > 0  # it served before the drain
    assert after > 150  # most of the stream was sent while it drained, or after
    assert fleet.counters.gave_up == 0


class HeldReplay:
    """A replay store (the engine's ReplayStore seam) whose answers wait until
    ``release`` is set, so what reaches it stays in flight; the engine's own table
    otherwise."""

    def __init__(self):
        self.inner = MemoryReplayCache(1 << 12)
        self.release = threading.Event()
        self.reached = threading.Event()

    def check_and_record(self, keys, expires_ms, now_ms):
        self.reached.set()
        assert self.release.wait(60)
        return self.inner.check_and_record(keys, expires_ms, now_ms)


def test_busy_draining_moves_to_another_endpoint(pki, start_server, scenarios):
    held = HeldReplay()
    draining = ServerThread(server_config(pki, **{"server.max_queue_ms": 0}), replay=held)
    other = start_server()
    first, second, third = scenarios.presentations([Verdict.OK] * 3, now_ms())

    async def go(log: LogEvents):
        eps = [endpoint(draining), endpoint(other)]
        async with FleetClient(eps, connections=1, deadline=30) as fleet:
            assert await fleet.start() == 2
            # Round-robin from the first endpoint: `first` is held in flight there.
            pending = asyncio.ensure_future(fleet.verify(first, context=CTX))
            await asyncio.to_thread(held.reached.wait, 30)
            stopping = asyncio.ensure_future(asyncio.to_thread(draining.stop))
            await asyncio.to_thread(log.wait, "draining")
            # `second` goes to the other endpoint, `third` to the draining one: BUSY
            # "draining", then the other endpoint.
            assert (await fleet.verify(second, context=CTX)).verdict is Verdict.OK
            assert (await fleet.verify(third, context=CTX)).verdict is Verdict.OK
            c = fleet.counters
            assert (c.attempts, c.busy, c.retries, c.failovers) == (4, 1, 1, 1)
            ep = fleet.endpoints[0]
            assert ep.last_error == "draining" and ep.down(asyncio.get_running_loop().time())
            held.release.set()
            assert (await pending).verdict is Verdict.OK  # answered by the drain
            await stopping
            assert (c.attempts, c.busy, c.lost) == (4, 1, 0)

    try:
        with LogEvents() as log:
            run(go(log))
    finally:
        held.release.set()
        draining.stop()


def test_an_endpoint_that_refuses_connections_is_skipped(start_server, scenarios):
    srv = start_server()
    refused = f"127.0.0.1:{free_port()}"
    batch = scenarios.presentations([Verdict.OK, Verdict.EXPIRED] * 5, now_ms())

    async def go():
        async with FleetClient([refused, endpoint(srv)], deadline=30) as fleet:
            assert await fleet.start() == 1
            down, up = fleet.endpoints
            assert down.connect_failures >= 1 and down.connected == 0
            assert "refused" in down.last_error
            results = await asyncio.gather(*(fleet.verify(p) for p in batch))
            assert [r.verdict for r in results] == [Verdict.OK, Verdict.EXPIRED] * 5
            assert down.attempts == 0 and up.attempts == len(batch)
            assert fleet.counters.retries == 0

    run(go())


def test_nothing_reachable_is_busy_or_unavailable_within_the_deadline(scenarios):
    (pres,) = scenarios.presentations([Verdict.OK], now_ms())

    async def go():
        async with FleetClient([f"127.0.0.1:{free_port()}"], deadline=1.0) as fleet:
            result = await fleet.verify(pres)
            assert result.verdict is Verdict.BUSY
            assert result.reason.startswith("deadline passed")
            assert "no connection to any endpoint" in result.reason and "refused" in result.reason
            with pytest.raises(FleetUnavailable, match="refused"):
                await fleet.request("ping")
            assert fleet.counters.attempts == 0 and fleet.counters.gave_up == 1

    run(go())


def test_busy_is_retried_until_the_real_verdict(start_server, scenarios):
    # Two presentations in flight per connection: sixteen at once on one connection
    # draw BUSY ("connection in-flight limit") for most of them.
    srv = start_server(server__max_in_flight_per_connection=2, server__max_queue_ms=0)
    outcomes = [Verdict.OK, Verdict.OK, Verdict.EXPIRED, Verdict.OK] * 4
    batch = scenarios.presentations(outcomes, now_ms())

    async def go():
        async with FleetClient([endpoint(srv)], connections=1, retries=200, deadline=60) as fleet:
            results = await asyncio.gather(*(fleet.verify(p, context=CTX) for p in batch))
            assert [r.verdict for r in results] == outcomes
            c = fleet.counters
            assert c.busy > 0 and c.retries > 0 and c.gave_up == 0
            assert c.failovers == 0  # one endpoint: the retries had nowhere else to go

    run(go())


def test_busy_until_the_retries_run_out(start_server, scenarios):
    # A batch larger than the per-connection limit is BUSY on every attempt.
    srv = start_server(server__max_in_flight_per_connection=2)
    batch = scenarios.presentations([Verdict.OK] * 3, now_ms())

    async def go():
        async with FleetClient([endpoint(srv)], retries=3, deadline=60) as fleet:
            results = await fleet.verify_batch(batch)
            assert {r.verdict for r in results} == {Verdict.BUSY}
            assert all(r.reason.startswith("gave up after 4 attempts") for r in results)
            assert "connection in-flight limit" in results[0].reason
            assert fleet.counters.attempts == 4

    run(go())


def test_a_silent_endpoint_costs_the_deadline_not_a_hang(scenarios):
    batch = scenarios.presentations([Verdict.OK] * 3, now_ms())

    async def go():
        async with Silent() as silent:
            async with FleetClient([f"127.0.0.1:{silent.port}"], deadline=0.5) as fleet:
                result = await fleet.verify(batch[0])
                assert result.verdict is Verdict.BUSY
                assert result.reason.startswith("deadline passed")
                results = await fleet.verify_batch(batch[1:])
                assert [r.verdict for r in results] == [Verdict.BUSY] * 2
                assert results[0].reason.startswith("deadline passed")
                assert fleet.counters.timeouts >= 2 and fleet.counters.answered == 0
            assert silent.received > 0  # the requests were sent, and never answered

    run(go())


def test_a_silent_endpoint_is_failed_over(start_server, scenarios):
    srv = start_server()
    (pres,) = scenarios.presentations([Verdict.OK], now_ms())

    async def go():
        async with Silent() as silent:
            # Round-robin starts at the first endpoint: the silent one.
            eps = [f"127.0.0.1:{silent.port}", endpoint(srv)]
            async with FleetClient(eps, deadline=30, attempt_timeout=1.0) as fleet:
                assert await fleet.start() == 2
                result = await fleet.verify(pres, context=CTX)
                assert result.verdict is Verdict.OK
                c = fleet.counters
                assert (c.attempts, c.timeouts, c.failovers) == (2, 1, 1)
                assert fleet.endpoints[0].down(asyncio.get_running_loop().time())
            assert silent.received > 0

    run(go())


class RefusesEveryOtherKeyOnce:
    """A replay store (the engine's ReplayStore seam) that cannot answer for every
    other key the first time it is asked about it (the server answers those items
    BUSY, "replay_store_unavailable"), and is a MemoryReplayCache otherwise."""

    def __init__(self):
        self.inner = MemoryReplayCache(1 << 12)
        self.refused: set[bytes] = set()
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def check_and_record(self, keys, expires_ms, now_ms):
        with self.lock:
            self.calls.append(len(keys))
            states = [FRESH] * len(keys)
            passed = []
            for k, key in enumerate(keys):
                raw = bytes(key)
                if k % 2 == 1 and raw not in self.refused:
                    self.refused.add(raw)
                    states[k] = UNAVAILABLE
                else:
                    passed.append(k)
            if passed:
                inner = self.inner.check_and_record(
                    np.ascontiguousarray(keys[passed]), expires_ms[passed], now_ms
                )
                for k, state in zip(passed, inner):
                    states[k] = int(state)
            return states


def test_a_batch_retries_only_its_busy_items(pki, scenarios):
    store = RefusesEveryOtherKeyOnce()
    srv = ServerThread(server_config(pki, **{"server.max_queue_ms": 0}), replay=store)
    outcomes = [Verdict.OK, Verdict.EXPIRED, *[Verdict.OK] * 5, Verdict.BAD_HOLDER_SIGNATURE]
    batch = scenarios.presentations(outcomes, now_ms())

    async def go():
        async with FleetClient([endpoint(srv)], deadline=30) as fleet:
            results = await fleet.verify_batch(batch, context=CTX)
            return results, fleet.counters

    try:
        results, counters = run(go())
    finally:
        srv.stop()
    # Six presentations reach the replay store; three were refused once and retried
    # alone: had the whole batch been sent again, the others would be REPLAYED now.
    assert [r.verdict for r in results] == outcomes
    assert store.calls == [6, 3]
    assert (counters.attempts, counters.busy, counters.retries) == (2, 3, 1)


def test_repeat_is_read_from_the_result_map():
    # A server with safe retries answers a recognised retry {"verdict": 0, "repeat": true}.
    assert Result.from_map({"verdict": 0, "claims": {}, "repeat": True}).repeat is True
    assert Result.from_map({"verdict": 0, "claims": {}}).repeat is False
    assert Result.from_map({"verdict": 14, "repeat": "yes"}).repeat is False  # bool only


def test_client_command_line_over_a_fleet(start_server, scenarios, tmp_path, capsys, monkeypatch):
    from engine.cli.exit import EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE
    from engine.cli.main import main

    servers = [start_server() for _ in range(2)]
    refused = f"127.0.0.1:{free_port()}"
    flags = ["--endpoint", f"{refused},{endpoint(servers[0])}", "--endpoint", endpoint(servers[1])]
    flags += ["--connections", "2", "--deadline-ms", "20000", "--retries", "3"]
    ok, expired = scenarios.presentations([Verdict.OK, Verdict.EXPIRED], now_ms())
    (tmp_path / "ok.bin").write_bytes(ok)
    (tmp_path / "expired.bin").write_bytes(expired)
    fresh = scenarios.presentations([Verdict.OK] * 2, now_ms())
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(p.hex() + "\n" for p in fresh)))

    assert main(["client", *flags, "verify", str(tmp_path / "ok.bin"), "-"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        str(tmp_path / "ok.bin"),
        "stdin:1",
        "stdin:2",
    ]
    assert all(": OK (0) card " in line for line in lines)
    assert main(["client", *flags, "verify", str(tmp_path / "expired.bin")]) == EXIT_FAILED
    assert ": EXPIRED (9)" in capsys.readouterr().out
    assert main(["client", *flags, "ping"]) == EXIT_OK
    assert capsys.readouterr().out.startswith("pong in ")

    nowhere = ["--endpoint", refused, "--deadline-ms", "500"]
    for argv in (
        ["client", *nowhere, "verify", str(tmp_path / "ok.bin")],
        ["client", *nowhere, "status"],
        ["client", "--endpoint", "host:port", "ping"],
        ["client", "--endpoint", endpoint(servers[0]), "--connections", "0", "ping"],
    ):
        assert main(argv) == EXIT_UNUSABLE, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err, (argv, err)


def test_client_command_line_with_mutual_tls(start_server, tmp_path, capsys):
    import trustme

    from engine.cli.main import main

    server_ca, client_ca = trustme.CA(), trustme.CA()
    server_ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    client_ca.cert_pem.write_to_path(str(tmp_path / "client-ca.pem"))
    server_ca.cert_pem.write_to_path(str(tmp_path / "server-ca.pem"))
    cert = client_ca.issue_cert("network-17.example")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client.pem"))
    srv = start_server(
        server__tls_cert=str(tmp_path / "server.pem"),
        server__tls_key=str(tmp_path / "server.pem"),
        server__tls_client_ca=str(tmp_path / "client-ca.pem"),
    )
    tls = ["--tls-ca", str(tmp_path / "server-ca.pem"), "--tls-cert", str(tmp_path / "client.pem")]
    assert main(["client", "--endpoint", endpoint(srv), *tls, "ping"]) == 0
    assert capsys.readouterr().out.startswith("pong in ")
    # Without a client certificate the server refuses: no answer, status 2.
    argv = ["client", "--endpoint", endpoint(srv), "--deadline-ms", "1000", *tls[:2], "ping"]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: no answer within 1000 ms")
