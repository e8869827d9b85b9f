"""Shared fixtures for the engine's tests."""

from __future__ import annotations

import json
import pathlib

import pytest

VECTORS = pathlib.Path(__file__).parent / "vectors"


@pytest.fixture(scope="session")
def wycheproof_ed25519() -> list[tuple[bytes, bytes, bytes, bool, int]]:
    """(message, signature, public key, expected validity, tcId) for every vector."""
    data = json.loads((VECTORS / "wycheproof_ed25519_test.json").read_text())
    cases = []
    for group in data["testGroups"]:
        pk = bytes.fromhex(group["publicKey"]["pk"])
        for t in group["tests"]:
            cases.append(
                (
                    bytes.fromhex(t["msg"]),
                    bytes.fromhex(t["sig"]),
                    pk,
                    t["result"] == "valid",
                    t["tcId"],
                )
            )
    return cases


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A complete demo PKI (root, 31 issuers, channels, trust list), made once."""
    from engine.tools.pki import init

    return init(tmp_path_factory.mktemp("pki") / "pki")


@pytest.fixture(scope="session")
def now_s() -> int:
    import time

    return int(time.time())


@pytest.fixture(scope="session")
def scenarios(pki, now_s):
    """Credentials for every outcome (engine.tools.scenarios), issued at now_s."""
    from engine.tools.scenarios import Scenarios

    return Scenarios(pki, now_s)


@pytest.fixture
def start_server(pki):
    """start_server(revocation=None, clock=None, **settings) -> a running ServerThread.

    Every server started through this fixture is drained and stopped at teardown.
    """
    from serving import ServerThread, server_config

    started = []

    def start(*, revocation=None, clock=None, **settings):
        kwargs = {"revocation": revocation}
        if clock is not None:
            kwargs["clock"] = clock
        dotted = {k.replace("__", "."): v for k, v in settings.items()}
        srv = ServerThread(server_config(pki, **dotted), **kwargs)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
