"""Shared fixtures for the engine's tests."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

VECTORS = pathlib.Path(__file__).parent / "vectors"

# The event loops every server test runs its servers on (the server runs on uvloop where
# it is installed and on the standard asyncio loop otherwise): ESSC_TEST_LOOPS, a comma
# list, narrows it (scripts/test-asan.sh: uvloop only, since the loop does not matter
# to the native code the sanitizers watch).
SERVER_LOOPS = ("uvloop", "asyncio")


def _loops_under_test() -> list[str]:
    # Servers the tests start inherit the variable; their configuration leaves it
    # alone (engine.server.config.NOT_SETTINGS).
    raw = os.environ.get("ESSC_TEST_LOOPS", "") or ",".join(SERVER_LOOPS)  # empty: unset
    loops = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = sorted(set(loops) - set(SERVER_LOOPS))
    if unknown or not loops:
        raise pytest.UsageError(
            f"ESSC_TEST_LOOPS={raw!r}: a comma list of {', '.join(SERVER_LOOPS)} expected"
        )
    return list(dict.fromkeys(loops))


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


@pytest.fixture(params=_loops_under_test())
def server_loop(request) -> str:
    """The event loop (a name in SERVER_LOOPS) the test's servers run on: every test
    that takes it, or start_server, runs once per loop, with the loop in its id.  A test
    marked ``server_loops(...)`` skips the other loops."""
    only = request.node.get_closest_marker("server_loops")
    if only is not None:
        if not only.kwargs.get("reason"):
            pytest.fail("server_loops(...) needs a reason=", pytrace=False)
        if request.param not in only.args:
            pytest.skip(f"not on {request.param}: {only.kwargs['reason']}")
    return request.param


@pytest.fixture
def start_server(pki, server_loop):
    """start_server(revocation=None, clock=None, **settings) -> a running ServerThread,
    on the event loop of ``server_loop``.

    Every server started through this fixture is drained and stopped at teardown.
    """
    from serving import ServerThread, server_config

    started = []

    def start(*, revocation=None, clock=None, **settings):
        kwargs = {"revocation": revocation}
        if clock is not None:
            kwargs["clock"] = clock
        dotted = {k.replace("__", "."): v for k, v in settings.items()}
        srv = ServerThread(server_config(pki, **dotted), loop=server_loop, **kwargs)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
