"""Revocation data distributed to the fleet: nodes pulling a publication point served by
a real nginx on loopback (docs/OPERATIONS.md, "Revocation sync"; docs/DEPLOYMENT.md).

The fetcher itself (downloads, resume, every refusal) is tested in
test_revocation_sync.py; these tests are about nodes: they converge to what is
published by themselves, keep serving while the source is away, and never go back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from realservers import nginx_server, wait_for
from revocation_helpers import write_list
from serving import ENGINE_ON, ServerThread, server_config

from engine.revocation.build import Signer
from engine.revocation.publication import INDEX_FILE, publish
from engine.server.config import ConfigError
from engine.server.server import Server
from engine.tools.pki import init
from engine.tools.scenarios import Scenarios
from engine.verdicts import Verdict
from engine.wire.client import Client

FIRST, SECOND, THIRD = "G10000001", "G10000002", "G10000003"
POLL_S = 0.2  # short, so convergence is quick; the default's cost is in docs/BENCHMARKS.md


@pytest.fixture
def platform(tmp_path):
    """A PKI, its publisher's signer, and a publication directory with snapshot 1
    (revoking FIRST) served by nginx."""
    pki = init(tmp_path / "pki")
    signer = Signer.from_file(pki.publisher_key_path)
    pub = tmp_path / "pub"
    publish(pub, signer, snapshot=[write_list(tmp_path / "first.txt", cards=[FIRST.encode()])])
    with nginx_server(tmp_path / "nginx", pub) as nginx:
        yield pki, signer, pub, nginx


def _node_settings(nginx, sync_dir, **more) -> dict:
    return {
        "revocation.source_url": nginx.url,
        "revocation.sync_dir": str(sync_dir),
        "revocation.poll_interval_s": POLL_S,
        **more,
    }


async def _revoked(port: int, card: str) -> tuple[bool, int, int]:
    """(card revoked?, revocation sequence, worker) as one node answers."""
    async with await Client.connect("127.0.0.1", port) as client:
        answer = await client.revocation_check([card], [])
        status = await client.status()
        return answer["cards"][0], answer["revocation_sequence"], status["worker"]


def revoked(port: int, card: str) -> bool:
    return asyncio.run(_revoked(port, card))[0]


def test_every_node_converges_to_what_is_published(platform, tmp_path, server_loop):
    pki, signer, pub, nginx = platform
    nodes = [
        ServerThread(
            server_config(pki, **_node_settings(nginx, tmp_path / f"node{k}")), loop=server_loop
        )
        for k in range(2)
    ]
    try:
        # Synced at start: the snapshot is in service before the first request.
        assert all(revoked(n.port, FIRST) for n in nodes)
        assert not any(revoked(n.port, SECOND) for n in nodes)
        publish(pub, signer, add=[write_list(tmp_path / "second.txt", cards=[SECOND.encode()])])
        for n in nodes:
            wait_for(lambda n=n: revoked(n.port, SECOND), what="the delta in service")
        status = asyncio.run(_status(nodes[0].port))
        assert status["revocation_sequence"] == 2
        assert status["revocation"]["source"] == nginx.url
        assert status["revocation"]["sync"]["last_error"] is None
        # Each node fetched the index and the new delta, never the snapshot again.
        snapshot_gets = [
            e for e in nginx.access_log() if e.uri.startswith("/snapshot-") and e.status == 200
        ]
        assert len(snapshot_gets) == 2  # once per node, at start
        metrics = nodes[0].server.metrics
        assert metrics.sync_polls.labels("changed")._value.get() >= 1
        assert metrics.sync_bytes._value.get() > 0
    finally:
        for n in nodes:
            n.stop()


def test_a_node_keeps_serving_while_the_source_is_away(platform, tmp_path, server_loop):
    pki, signer, pub, nginx = platform
    node = ServerThread(
        server_config(pki, **_node_settings(nginx, tmp_path / "node")), loop=server_loop
    )
    scenarios = Scenarios(pki, int(time.time()), holders_per_outcome=1)
    try:
        nginx.stop()
        fetcher = node.server.fetcher
        wait_for(lambda: fetcher.sync.failures.get("unreachable", 0) >= 2, what="failed polls")
        assert node.server.metrics.sync_failures.labels("unreachable")._value.get() >= 2
        # The data in service still answers, both ways.
        assert revoked(node.port, FIRST)
        (ok,) = scenarios.presentations([Verdict.OK], int(time.time() * 1000))
        assert asyncio.run(_verify(node.port, ok)) is Verdict.OK
        # Back, with something new: picked up by itself.
        publish(pub, signer, add=[write_list(tmp_path / "third.txt", cards=[THIRD.encode()])])
        nginx.start()
        wait_for(lambda: revoked(node.port, THIRD), what="the delta after the outage")
    finally:
        node.stop()


def test_expired_data_fails_closed(platform, tmp_path, server_loop):
    pki, _, _, nginx = platform
    later = time.time() + 3 * 86400  # past the default expiry (two days)
    settings = _node_settings(nginx, tmp_path / "node", **{"revocation.max_age_s": 1e9})
    node = ServerThread(
        server_config(pki, **settings), loop=server_loop, clock=lambda: time.time() + 3 * 86400
    )
    try:
        scenarios = Scenarios(pki, int(later), holders_per_outcome=1)
        (ok,) = scenarios.presentations([Verdict.OK], int(later * 1000))
        assert asyncio.run(_verify(node.port, ok)) is Verdict.REVOCATION_DATA_STALE
    finally:
        node.stop()


def test_an_old_index_put_back_is_refused_across_restarts(platform, tmp_path, server_loop):
    pki, signer, pub, nginx = platform
    first_index = (pub / INDEX_FILE).read_bytes()
    publish(pub, signer, add=[write_list(tmp_path / "second.txt", cards=[SECOND.encode()])])
    sync_dir = tmp_path / "node"
    settings = _node_settings(nginx, sync_dir)
    node = ServerThread(server_config(pki, **settings), loop=server_loop)
    try:
        assert revoked(node.port, SECOND)
    finally:
        node.stop()
    # The old index (validly signed, its snapshot still published) is put back.
    (pub / INDEX_FILE).write_bytes(first_index)
    node = ServerThread(server_config(pki, **settings), loop=server_loop)
    try:
        fetcher = node.server.fetcher
        wait_for(lambda: fetcher.sync.failures.get("rollback", 0) >= 1, what="a rollback refused")
        assert revoked(node.port, SECOND)  # still the newer data
    finally:
        node.stop()
    # A node with nothing synced but the state that remembers sequence 2 does not start.
    fresh = _node_settings(
        nginx, tmp_path / "fresh", **{"revocation.state_file": str(sync_dir / "accepted.json")}
    )
    with pytest.raises(ConfigError, match=r"rollback|older"):
        Server(server_config(pki, **fresh))


def test_a_supervised_node_fetches_once_and_reloads_every_worker(platform, tmp_path):
    pki, signer, pub, nginx = platform
    cfg = tmp_path / "engine.toml"
    cfg.write_text(
        '[server]\nhost = "127.0.0.1"\nport = 0\nprocesses = 2\n[metrics]\nport = 0\n'
        f'[trust]\nroot_public_key = "{pki.root_public_key.hex()}"\n'
        f'trust_list = "{pki.trust_list_path}"\n'
        f'[revocation]\nsource_url = "{nginx.url}"\nsync_dir = "{tmp_path / "node"}"\n'
        f"poll_interval_s = {POLL_S}\n"
    )
    log = tmp_path / "engine.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, *ENGINE_ON["uvloop"], "serve", "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # the supervisor and its workers: one group to kill
        )
    try:

        def events() -> list[dict]:
            return [json.loads(line) for line in log.read_text().splitlines() if line]

        wait_for(
            lambda: (
                proc.poll() is not None or sum(e.get("event") == "listening" for e in events()) == 2
            ),
            what="both workers listening",
        )
        assert proc.poll() is None, log.read_text()
        (started,) = [e for e in events() if e.get("event") == "supervisor_started"]
        port = int(started["address"].rsplit(":", 1)[1])
        publish(pub, signer, add=[write_list(tmp_path / "second.txt", cards=[SECOND.encode()])])
        seen: set[int] = set()

        def every_worker_revokes() -> bool:
            is_revoked, _, worker = asyncio.run(_revoked(port, SECOND))
            if is_revoked:
                seen.add(worker)
            return seen == {0, 1}

        wait_for(every_worker_revokes, what="both workers serving the delta")

        # One fetcher per node: the delta was downloaded once.
        def delta_gets() -> list:
            return [e for e in nginx.access_log() if e.uri.startswith("/delta-")]

        wait_for(lambda: delta_gets(), what="the delta's log entry")
        assert len([e for e in delta_gets() if e.status == 200]) == 1
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        with contextlib.suppress(ProcessLookupError):  # whatever did not stop in time
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


async def _status(port: int) -> dict:
    async with await Client.connect("127.0.0.1", port) as client:
        return await client.status()


async def _verify(port: int, presentation: bytes) -> Verdict:
    async with await Client.connect("127.0.0.1", port) as client:
        return (await client.verify(presentation)).verdict
