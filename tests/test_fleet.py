"""A whole fleet, as `make fleet` runs it (engine.tools.fleet): a real Redis, three
engine nodes as `python -m engine serve` processes sharing it, and a real HAProxy with
the shipped deploy/haproxy.cfg in front, all on free loopback ports.  Through the
balancer: a presentation is accepted once across the nodes; a payment network using
the FleetClient survives a node killed and a rolling restart of every node with zero
failed verifies."""

from __future__ import annotations

import asyncio
import time

import pytest
from realservers import require_program

from engine.tools.fleet import Fleet, FleetLayout
from engine.tools.processes import wait_until
from engine.verdicts import Verdict
from engine.wire.client import Client
from engine.wire.pool import FleetClient

NETWORK = {"merchant_id": "m-0042", "terminal_id": "t-0001"}


@pytest.fixture
def fleet(pki, tmp_path):
    require_program("redis-server")
    require_program("haproxy")
    config = tmp_path / "engine.toml"
    config.write_text(
        f'[trust]\nroot_public_key = "{pki.root_public_key.hex()}"\n'
        f'trust_list = "{pki.trust_list_path}"\n'
        # One verification thread a node: three nodes share this machine's cores.
        "[batching]\nworkers = 1\n"
        "[server]\ndrain_notice_s = 0.3\n"
    )
    f = Fleet(config, FleetLayout.free(), tmp_path / "fleet")
    f.start()
    try:
        yield f
    finally:
        f.stop()


def now_ms() -> int:
    return int(time.time() * 1000)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 240))


async def _connections_on_two_nodes(front: int) -> tuple[Client, Client]:
    """Two client connections through the balancer that reached different nodes."""
    first = await Client.connect("127.0.0.1", front)
    pid = (await first.status())["pid"]
    for _ in range(30):
        other = await Client.connect("127.0.0.1", front)
        if (await other.status())["pid"] != pid:
            return first, other
        await other.close()
    raise AssertionError("leastconn never sent a second connection to another node")


async def _answered(client: Client, p: bytes):
    """A verdict on the card: BUSY (the node's admission) is asked again."""
    for _ in range(50):
        result = await client.verify(p)
        if result.verdict != Verdict.BUSY:
            return result
        await asyncio.sleep(0.01)
    raise AssertionError(f"BUSY 50 times: {result}")


def test_a_presentation_is_accepted_once_through_the_balancer(fleet, scenarios):
    async def go():
        a, b = await _connections_on_two_nodes(fleet.layout.front_port)
        async with a, b:
            presentations = scenarios.presentations([Verdict.OK] * 1000, now_ms())
            window = asyncio.Semaphore(64)  # pairs in flight: no BUSY from admission

            async def pair(p: bytes):
                async with window:
                    return await asyncio.gather(_answered(a, p), _answered(b, p))

            pairs = await asyncio.gather(*(pair(p) for p in presentations))
        for first, second in pairs:
            assert sorted([first.verdict, second.verdict]) == [Verdict.OK, Verdict.REPLAYED]
        assert {first.verdict for first, _ in pairs} == {Verdict.OK, Verdict.REPLAYED}

    run(go())


CONNECTIONS = 8  # the load's client connections, spread over the nodes by leastconn


async def _load(front: int, scenarios, stop: asyncio.Event, counts: dict[str, int]):
    """Fresh valid presentations, 16 at a time, through a FleetClient on the balancer,
    until ``stop``; every answer must be OK (first time or a safe retry)."""
    failures: list[object] = []
    async with FleetClient(
        [f"127.0.0.1:{front}"], connections=CONNECTIONS, deadline=10.0
    ) as client:
        await client.start()

        async def one(p: bytes) -> None:
            r = await client.verify(p, context=NETWORK)
            counts["answered"] += 1
            counts["repeat"] += r.repeat
            if r.verdict != Verdict.OK:
                failures.append(r)

        while not stop.is_set():
            batch = scenarios.presentations([Verdict.OK] * 16, now_ms())
            await asyncio.gather(*(one(p) for p in batch))
        counts.update({f"client_{k}": v for k, v in vars(client.counters).items()})
    return failures


def test_a_node_killed_under_load_costs_no_failed_verify(fleet, scenarios):
    counts = {"answered": 0, "repeat": 0}

    async def go():
        # Every node in service before the client connects, and the node to kill holding
        # some of its connections (leastconn over the UP nodes): then the kill is felt.
        await asyncio.to_thread(fleet.wait_status, {name: "UP" for name in fleet.server_names})
        stop = asyncio.Event()
        load = asyncio.create_task(_load(fleet.layout.front_port, scenarios, stop, counts))
        while counts["answered"] < 400:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(
            wait_until,
            lambda: int(fleet.haproxy.stats()["e2"]["scur"]) > 0,
            30,
            "client connections on e2",
        )
        killed_at = counts["answered"]
        await asyncio.to_thread(fleet.kill_node, 1)
        await asyncio.to_thread(fleet.wait_status, {"e2": "DOWN"})
        while counts["answered"] < killed_at + 400:  # the load carried on without it
            await asyncio.sleep(0.01)
        stop.set()
        return await load

    failures = run(go())
    assert failures == [], failures[:5]
    # The kill was felt: the node's connections (there were some) were lost, and made
    # again to the others; requests in flight on them, if any, were sent again.
    assert counts["client_connects"] > CONNECTIONS, counts


def test_a_rolling_restart_of_every_node_costs_no_failed_verify(fleet, scenarios):
    counts = {"answered": 0, "repeat": 0}

    async def go():
        stop = asyncio.Event()
        load = asyncio.create_task(_load(fleet.layout.front_port, scenarios, stop, counts))
        while counts["answered"] < 200:
            await asyncio.sleep(0.01)
        pids_before = {n.pid for n in fleet.nodes if n is not None}
        for k in range(len(fleet.nodes)):
            await asyncio.to_thread(fleet.restart_node, k)
        assert not pids_before & {n.pid for n in fleet.nodes if n is not None}
        restarted_at = counts["answered"]
        while counts["answered"] < restarted_at + 200:
            await asyncio.sleep(0.01)
        stop.set()
        return await load

    failures = run(go())
    assert failures == [], failures[:5]
