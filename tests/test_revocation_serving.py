"""The server and signed revocation data: what it refuses at start, what a restart
remembers, and what a trust list that disowns a publisher key does to the data in
service (docs/OPERATIONS.md, "Signed revocation data")."""

from __future__ import annotations

import dataclasses
import time

import pytest
from revocation_helpers import delta, snapshot
from serving import LogEvents, ServerThread, server_config

from engine.formats.files import write_atomically
from engine.formats.trustlist import Status
from engine.revocation.build import Signer
from engine.server.config import ConfigError
from engine.server.server import Server
from engine.tools.pki import init, update_trust_list
from engine.tools.scenarios import Scenarios
from engine.verdicts import Verdict
from engine.wire.client import Client

CARDS = [b"G12345678"]


@pytest.fixture
def own(tmp_path):
    pki = init(tmp_path / "pki")
    return pki, Signer.from_file(pki.publisher_key_path)


def test_unsigned_data_is_refused_at_start_unless_allowed(own, tmp_path):
    pki, _ = own
    snap = snapshot(tmp_path, "u.snap", cards=CARDS)
    with pytest.raises(ConfigError, match=r"u.snap: not signed \(format version 1\)"):
        Server(server_config(pki, **{"revocation.snapshot": str(snap)}))
    cfg = server_config(
        pki, **{"revocation.snapshot": str(snap), "revocation.require_signature": False}
    )
    with LogEvents() as log:
        srv = Server(cfg)
    (event,) = log.named("revocation_unsigned")
    assert event["files"] == [str(snap)]
    assert srv.verifier.revocation.unsigned == (str(snap),)


def test_a_trust_list_without_publisher_keys_cannot_check_revocation_data(own, tmp_path):
    pki, signer = own
    trust = pki.trust_list
    v1 = dataclasses.replace(trust, version=1, publishers={}).signed(pki.root_signing_key())
    listing = tmp_path / "v1.trustlist"
    write_atomically(listing, v1.encode())
    snap = snapshot(tmp_path, "s.snap", cards=CARDS, signer=signer)
    settings = {"revocation.snapshot": str(snap), "trust.trust_list": str(listing)}
    with pytest.raises(ConfigError, match="names no revocation publisher key"):
        Server(server_config(pki, **settings))
    # Migration: the old list still serves unsigned data with signatures not required;
    # a signed file is still checked, and with no key to check it against, refused.
    lax = {**settings, "revocation.require_signature": False}
    with pytest.raises(ConfigError, match="not a revocation publisher key"):
        Server(server_config(pki, **lax))
    lax["revocation.snapshot"] = str(snapshot(tmp_path, "u.snap", cards=CARDS))
    srv = Server(server_config(pki, **lax))
    assert srv.verifier.trust_list.version == 1 and srv.verifier.revocation.unsigned
    # Without revocation data the old list serves as it always did.
    Server(server_config(pki, **{"trust.trust_list": str(listing)}))


def test_a_restart_refuses_older_data_unless_told_to_roll_back(own, tmp_path):
    pki, signer = own
    snap = tmp_path / "rev.snap"
    newer = snapshot(tmp_path, "newer.snap", cards=CARDS, sequence=5, signer=signer)
    newer.replace(snap)
    settings = {"revocation.snapshot": str(snap)}
    assert Server(server_config(pki, **settings)).verifier.revocation.sequence == 5
    assert (tmp_path / ".essc-revocation-accepted.json").exists()
    older = snapshot(tmp_path, "older.snap", cards=(), sequence=3, signer=signer)
    older.replace(snap)  # someone puts an old (validly signed) file back
    with pytest.raises(ConfigError, match="snapshot 3 is older than snapshot 5, already accepted"):
        Server(server_config(pki, **settings))
    forced = Server(server_config(pki, **settings, **{"revocation.allow_rollback": True}))
    assert forced.verifier.revocation.sequence == 3


def test_an_explicit_state_file_is_used(own, tmp_path):
    pki, signer = own
    state = tmp_path / "state" / "accepted.json"
    snap = snapshot(tmp_path, "s.snap", cards=CARDS, sequence=2, signer=signer)
    d = delta(tmp_path, "3.delta", snap, signer=signer)
    Server(
        server_config(
            pki,
            **{
                "revocation.snapshot": str(snap),
                "revocation.deltas": [str(d)],
                "revocation.state_file": str(state),
            },
        )
    )
    assert '"sequence": 3' in state.read_text()


def test_revoking_the_publisher_key_fails_closed_until_trusted_data_loads(
    own, tmp_path, server_loop
):
    import asyncio

    pki, signer = own
    scenarios = Scenarios(pki, int(time.time()), holders_per_outcome=1)
    snap = snapshot(tmp_path, "s.snap", cards=CARDS, signer=signer)
    srv = ServerThread(server_config(pki, **{"revocation.snapshot": str(snap)}), loop=server_loop)
    try:

        async def verdict() -> tuple[Verdict, str | None]:
            (pres,) = scenarios.presentations([Verdict.OK], int(time.time() * 1000))
            async with await Client.connect("127.0.0.1", srv.port) as client:
                result = await client.verify(pres)
                return result.verdict, result.reason

        assert asyncio.run(verdict())[0] is Verdict.OK
        update_trust_list(pki, publisher_status={"rev-pub-01": Status.REVOKED})
        with LogEvents() as log:
            assert srv.call(srv.server.reload("test")) is False
        assert log.named("revocation_distrusted")
        code, reason = asyncio.run(verdict())
        assert code is Verdict.REVOCATION_DATA_STALE and "no longer trusted" in reason
        status = asyncio.run(_status(srv.port))
        assert status["revocation"]["manifest"]["publisher_key_id"] == "rev-pub-01"
    finally:
        srv.stop()


async def _status(port: int) -> dict:
    async with await Client.connect("127.0.0.1", port) as client:
        return await client.status()
