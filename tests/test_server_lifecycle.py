"""The server as ops run it: a subprocess with signals (SIGHUP reload, SIGTERM drain)."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from serving import ENGINE_ON

from engine.formats.trustlist import Status
from engine.tools.pki import init, update_trust_list
from engine.tools.scenarios import Scenarios
from engine.verdicts import Verdict
from engine.wire.client import Client


class ServerProcess:
    """`python -m engine serve` on 127.0.0.1 and a free port, on the event loop ``loop``
    (a name in ENGINE_ON); its JSON log lines are events."""

    def __init__(self, pki, tmp_path, *flags: str, revocation=None, loop="uvloop", **popen):
        cfg = tmp_path / "engine.toml"
        text = (
            '[server]\nhost = "127.0.0.1"\nport = 0\n[metrics]\nport = 0\n'
            f'[trust]\nroot_public_key = "{pki.root_public_key.hex()}"\n'
            f'trust_list = "{pki.trust_list_path}"\n'
        )
        if revocation is not None:
            text += f'[revocation]\nsnapshot = "{revocation}"\n'
        cfg.write_text(text)
        self.proc = subprocess.Popen(
            [sys.executable, *ENGINE_ON[loop], "serve", "--config", str(cfg), *flags],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            **popen,
        )
        self.events: queue.Queue = queue.Queue()
        self.log: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()
        listening = self.wait_for("listening")
        self.port = int(listening["address"].rsplit(":", 1)[1])

    def _read(self) -> None:
        for line in self.proc.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "unparsed", "line": line}
            self.log.append(event)
            self.events.put(event)
        self.events.put(None)

    def wait_for(self, name: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            if event is None:
                raise AssertionError(f"server exited before {name!r}: {self.log}")
            if event.get("event") == name:
                return event

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture
def own_pki(tmp_path):
    return init(tmp_path / "pki")


@pytest.fixture
def serve(own_pki, tmp_path, server_loop):
    started = []

    def start(*flags, revocation=None):
        p = ServerProcess(own_pki, tmp_path, *flags, revocation=revocation, loop=server_loop)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def now_ms() -> int:
    return int(time.time() * 1000)


def test_sigterm_drains_with_zero_lost_responses(serve, own_pki):
    srv = serve(
        "--set", "server.max_in_flight_per_connection=5000", "--set", "server.max_queue_ms=0"
    )
    scenarios = Scenarios(own_pki, int(time.time()))
    batch = scenarios.presentations([Verdict.OK] * 1500, now_ms())

    async def go():
        client = await Client.connect("127.0.0.1", srv.port)
        tasks = [asyncio.ensure_future(client.verify(p)) for p in batch]
        await asyncio.sleep(0)  # every request written
        await client.ping()  # answered only after the server has read all of them
        srv.signal(signal.SIGTERM)
        results = await asyncio.gather(*tasks)
        await client.close()
        return results

    results = asyncio.run(asyncio.wait_for(go(), 120))
    assert len(results) == 1500
    verdicts = {r.verdict for r in results}
    assert verdicts <= {Verdict.OK, Verdict.BUSY}
    # Everything read before SIGTERM was in flight, so it is answered with its verdict.
    assert [r.verdict for r in results].count(Verdict.OK) == 1500
    assert srv.proc.wait(30) == 0
    stopped = srv.wait_for("stopped")
    assert stopped["unanswered"] == 0


def test_sighup_reloads_under_traffic_without_failures(serve, own_pki, tmp_path):
    srv = serve()
    scenarios = Scenarios(own_pki, int(time.time()))

    async def traffic(client, stop: asyncio.Event):
        verdicts = []
        while not stop.is_set():
            batch = scenarios.presentations([Verdict.OK] * 20, now_ms())
            verdicts += [r.verdict for r in await client.verify_batch(batch)]
        return verdicts

    async def go():
        client = await Client.connect("127.0.0.1", srv.port)
        stop = asyncio.Event()
        task = asyncio.ensure_future(traffic(client, stop))
        loop = asyncio.get_running_loop()
        # 1. A newer list, announced by SIGHUP, replaces the old one.
        update_trust_list(own_pki, channel_status={"alipay": Status.SUSPENDED})
        srv.signal(signal.SIGHUP)
        reloaded = await loop.run_in_executor(None, srv.wait_for, "reloaded")
        assert reloaded["sequence"] == 2
        # 2. A corrupt file is refused; the old list stays in service.
        good = own_pki.trust_list_path.read_bytes()
        own_pki.trust_list_path.write_bytes(good[:-7])
        srv.signal(signal.SIGHUP)
        failed = await loop.run_in_executor(None, srv.wait_for, "reload_failed")
        assert failed["in_service"] == 2
        # 3. An older list is refused too.
        own_pki.trust_list_path.write_bytes(own_pki.trust_list.encode())
        srv.signal(signal.SIGHUP)
        rejected = await loop.run_in_executor(None, srv.wait_for, "reload_rejected")
        assert rejected["offered"] == 1 and rejected["in_service"] == 2
        assert (await client.status())["trust_list_sequence"] == 2
        stop.set()
        verdicts = await task
        await client.close()
        return verdicts

    verdicts = asyncio.run(asyncio.wait_for(go(), 120))
    assert len(verdicts) >= 20
    assert set(verdicts) == {Verdict.OK}


def test_new_trust_list_changes_verdicts(serve, own_pki):
    srv = serve()
    scenarios = Scenarios(own_pki, int(time.time()))

    async def go():
        async with await Client.connect("127.0.0.1", srv.port) as client:
            (a,) = scenarios.presentations([Verdict.OK], now_ms())
            assert (await client.verify(a)).verdict is Verdict.OK
            update_trust_list(own_pki, channel_status={"hrss-app": Status.REVOKED})
            srv.signal(signal.SIGHUP)
            await asyncio.get_running_loop().run_in_executor(None, srv.wait_for, "reloaded")
            (b,) = scenarios.presentations([Verdict.OK], now_ms())
            assert (await client.verify(b)).verdict is Verdict.CHANNEL_REVOKED

    asyncio.run(asyncio.wait_for(go(), 60))


def test_file_watcher_reloads_without_a_signal(serve, own_pki):
    srv = serve("--set", "reload.watch_interval_s=0.2")
    update_trust_list(own_pki, issuer_status={"iss-110000-01": Status.SUSPENDED})
    assert srv.wait_for("reloaded")["why"] == "file changed"


def test_bad_configuration_is_one_clear_error(tmp_path, own_pki):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[server]\nprot = 7700\n")
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown setting 'server.prot'" in proc.stderr
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "--trust-list",
            str(own_pki.trust_list_path),
            "--root-key",
            "00" * 32,
            "--check",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "root signature does not verify" in proc.stderr
    env = dict(os.environ, ESSC_SERVER_PORT="not-a-port")
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "serve", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert proc.returncode == 2
    assert "ESSC_SERVER_PORT" in proc.stderr


def _snapshot(path, pki, cards=(), serials=(), sequence=1):
    """A snapshot signed with ``pki``'s revocation publisher key (the server requires it)."""
    from engine.revocation.build import Signer, build_snapshot

    listing = path.with_suffix(".txt")
    lines = [f"card {c}" for c in cards] + [f"credential {s.hex()}" for s in serials]
    listing.write_text("\n".join(["# test", *lines]) + "\n")
    signer = Signer.from_file(pki.publisher_key_path)
    build_snapshot(path, [listing], sequence=sequence, signer=signer)


def test_revocation_snapshot_served_and_reloaded(serve, own_pki, tmp_path):
    from engine.formats.credentials import Presentation

    scenarios = Scenarios(own_pki, int(time.time()))
    snap = tmp_path / "revocation.snap"
    _snapshot(snap, own_pki, serials=scenarios.revoked_serials)
    srv = serve(revocation=snap)

    async def go():
        async with await Client.connect("127.0.0.1", srv.port) as client:
            loop = asyncio.get_running_loop()
            ok, cred_revoked = scenarios.presentations(
                [Verdict.OK, Verdict.CREDENTIAL_REVOKED], now_ms()
            )
            verdicts = [r.verdict for r in await client.verify_batch([ok, cred_revoked])]
            assert verdicts == [Verdict.OK, Verdict.CREDENTIAL_REVOKED]
            assert (await client.status())["revocation_sequence"] == 1
            # The OK card is revoked in the next snapshot, swapped in on SIGHUP.
            card = Presentation.decode(ok).credential.card_number
            _snapshot(snap, own_pki, cards=[card], serials=scenarios.revoked_serials, sequence=2)
            srv.signal(signal.SIGHUP)
            event = await loop.run_in_executor(None, srv.wait_for, "reloaded")
            assert (event["what"], event["sequence"]) == ("revocation", 2)
            (again,) = scenarios.presentations([Verdict.OK], now_ms())
            assert (await client.verify(again)).verdict is Verdict.CARD_REVOKED
            # A damaged file is refused and the data in service stays.
            data = bytearray(snap.read_bytes())
            data[-1] ^= 0xFF
            damaged = tmp_path / "damaged.snap"
            damaged.write_bytes(bytes(data))
            damaged.replace(snap)
            srv.signal(signal.SIGHUP)
            failed = await loop.run_in_executor(None, srv.wait_for, "reload_failed")
            assert failed["what"] == "revocation" and failed["in_service"] == 2
            assert "checksum" in failed["error"] or "CRC" in failed["error"]
            (third,) = scenarios.presentations([Verdict.OK], now_ms())
            assert (await client.verify(third)).verdict is Verdict.CARD_REVOKED
            answer = await client.revocation_check([card], [])
            assert answer == {
                "id": answer["id"],
                "cards": [True],
                "credentials": [],
                "revocation_sequence": 2,
                "revocation_age_s": answer["revocation_age_s"],
                "stale": False,
            }

    asyncio.run(asyncio.wait_for(go(), 60))


def test_revocation_files_changed_under_a_running_server(serve, own_pki, tmp_path):
    """In place, truncated, or unreadable under the mapping: never OK for a revoked card,
    never a crash; the data in service stays until a reload validates a new file."""
    import shutil

    scenarios = Scenarios(own_pki, int(time.time()))
    snap = tmp_path / "revocation.snap"
    _snapshot(snap, own_pki, serials=scenarios.revoked_serials)
    private = tmp_path / "private"
    srv = serve("--set", f"revocation.private_dir={private}", revocation=snap)
    revoked = Verdict.CREDENTIAL_REVOKED

    async def verdict(client) -> Verdict:
        (pres,) = scenarios.presentations([revoked], now_ms())
        return (await client.verify(pres)).verdict

    async def go():
        loop = asyncio.get_running_loop()
        async with await Client.connect("127.0.0.1", srv.port) as client:
            assert await verdict(client) is revoked
            # The storage under the mapping fails: fail closed, log, reload at once.
            (copy,) = private.iterdir()
            copy.chmod(0o600)
            os.truncate(copy, 4096)
            assert await verdict(client) is Verdict.REVOCATION_DATA_STALE
            await loop.run_in_executor(None, srv.wait_for, "revocation_unreadable")
            event = await loop.run_in_executor(None, srv.wait_for, "reloaded")
            assert event["why"] == "revocation data unreadable"
            assert await verdict(client) is revoked
            # cp over the configured file (same inode; nothing revoked, other seed):
            other = tmp_path / "other.snap"
            _snapshot(other, own_pki, sequence=2)
            shutil.copyfile(other, snap)
            assert await verdict(client) is revoked
            assert (await client.status())["revocation_sequence"] == 1
            os.truncate(snap, 100)  # and truncated in place
            assert await verdict(client) is revoked
        return srv.proc.poll()

    assert asyncio.run(asyncio.wait_for(go(), 60)) is None  # still serving


def test_client_command_line(serve, own_pki, tmp_path):
    from engine.tools import issuance

    wallets = tmp_path / "w.essc"
    issuance.issue_to_file(own_pki, 4, wallets, progress=False)
    snap = tmp_path / "revocation.snap"
    _snapshot(snap, own_pki, cards=["B00000001"], serials=[bytes(range(16))])
    srv = serve(revocation=snap)
    target = ["--target", f"127.0.0.1:{srv.port}"]

    def client(*args):
        return subprocess.run(
            [sys.executable, "-m", "engine", "client", *target, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    out = client(
        "revocation-check",
        "credential:" + bytes(range(16)).hex(),
        "card:B00000001",
        "card:B00000002",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "credential:000102030405060708090a0b0c0d0e0f: REVOKED",
        "card:B00000001: REVOKED",
        "card:B00000002: not revoked",
    ]
    out = client("try", "--wallets", str(wallets), "--count", "4")
    assert out.returncode == 0 and out.stdout.count(": OK (0)") == 4
    assert client("ping").stdout.startswith("pong in ")
    assert '"revocation_sequence": 1' in client("status").stdout
    bad = client("revocation-check", "nonsense")
    assert bad.returncode == 2 and "expected card:" in bad.stderr


def test_the_environment_sets_settings_and_leaves_the_projects_switches_alone():
    from engine.server import config

    cfg = config.load(environ={"ESSC_SERVER_PORT": "7711", "ESSC_LONG_TESTS": "1"})
    assert cfg.server.port == 7711
    for name in sorted(config.NOT_SETTINGS):
        config.load(environ={name: "1"})  # a build or test switch is not a setting
    with pytest.raises(config.ConfigError, match="ESSC_SERVR_PORT"):
        config.load(environ={"ESSC_SERVR_PORT": "7711"})  # a typo is still refused
