"""TLS and mutual TLS between payment networks and the server (certificates from trustme)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

import pytest
import trustme
from serving import LogEvents, closed_by_peer

from engine.server.config import ConfigError
from engine.verdicts import Verdict
from engine.wire.client import Client


@pytest.fixture(scope="module")
def pki_tls(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    server_ca = trustme.CA()
    client_ca = trustme.CA()
    server_cert = server_ca.issue_cert("127.0.0.1", "localhost")
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(d / "server.pem"))
    client_ca.cert_pem.write_to_path(str(d / "client-ca.pem"))
    return {
        "dir": d,
        "server_ca": server_ca,
        "client_ca": client_ca,
        "client_cert": client_ca.issue_cert("network-17.example"),
        "stranger_cert": trustme.CA().issue_cert("stranger.example"),
    }


def client_context(tls, cert=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    tls["server_ca"].configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    return ctx


def test_mutual_tls(start_server, pki_tls, scenarios):
    d = pki_tls["dir"]
    srv = start_server(
        server__tls_cert=str(d / "server.pem"),
        server__tls_key=str(d / "server.pem"),
        server__tls_client_ca=str(d / "client-ca.pem"),
    )
    (pres,) = scenarios.presentations([Verdict.OK], int(time.time() * 1000))

    async def verify_with(ctx):
        async with await Client.connect("127.0.0.1", srv.port, ssl=ctx) as client:
            return await client.verify(pres)

    async def go():
        ok = await verify_with(client_context(pki_tls, pki_tls["client_cert"]))
        assert ok.verdict is Verdict.OK
        # Without a client certificate, or with one from another CA: no service.
        for cert in (None, pki_tls["stranger_cert"]):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await verify_with(client_context(pki_tls, cert))
        # Plain TCP to a TLS port gets nothing either.
        with pytest.raises((ConnectionError, asyncio.TimeoutError, ssl.SSLError)):
            async with await Client.connect("127.0.0.1", srv.port) as client:
                await asyncio.wait_for(client.ping(), 10)

    asyncio.run(asyncio.wait_for(go(), 60))


def test_tls_misconfiguration_is_a_clear_error(pki, pki_tls):
    from serving import server_config

    from engine.server.server import Server

    missing = str(pki_tls["dir"] / "missing.pem")
    cfg = server_config(pki, **{"server.tls_cert": missing})
    with pytest.raises(ConfigError, match=r"tls_cert and server\.tls_key go together"):
        Server(cfg)
    from serving import ServerThread

    cfg = server_config(pki, **{"server.tls_cert": missing, "server.tls_key": missing})
    with pytest.raises(ConfigError, match=r"TLS: .*No such file"):
        ServerThread(cfg)


def tls_server(start_server, pki_tls, **settings):
    d = pki_tls["dir"]
    return start_server(
        server__tls_cert=str(d / "server.pem"),
        server__tls_key=str(d / "server.pem"),
        server__tls_client_ca=str(d / "client-ca.pem"),
        **settings,
    )


def test_handshakes_count_against_the_limit_and_time_out(start_server, pki_tls):
    srv = tls_server(
        start_server, pki_tls, server__max_connections=3, server__tls_handshake_timeout_s=0.5
    )
    with LogEvents() as log:
        # Three clients that connect and never start a handshake hold every slot ...
        silent = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(3)]
        refused = socket.create_connection(("127.0.0.1", srv.port))
        # ... so a fourth is reset at once instead of waiting on a handshake,
        assert closed_by_peer(refused, 20)
        assert log.wait("connection_refused")[0]["reason"] == "connection limit"
        # and the three are closed when their handshake time is up.
        for sock in silent:
            assert closed_by_peer(sock, 20)
            sock.close()
        refused.close()
        failures = log.wait("tls_handshake_failed", 3)
        assert all(f["reason"].startswith("timeout") for f in failures), failures

    async def go():
        ctx = client_context(pki_tls, pki_tls["client_cert"])
        async with await Client.connect("127.0.0.1", srv.port, ssl=ctx) as client:
            return await client.ping(), len(srv.server.connections)

    assert asyncio.run(asyncio.wait_for(go(), 30)) == (True, 1)  # the slots are free again


def test_refused_client_certificates_are_logged(start_server, pki_tls):
    srv = tls_server(start_server, pki_tls)

    async def go(cert):
        async with await Client.connect(
            "127.0.0.1", srv.port, ssl=client_context(pki_tls, cert)
        ) as client:
            await client.ping()

    with LogEvents() as log:
        for cert in (pki_tls["stranger_cert"], None):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                asyncio.run(asyncio.wait_for(go(cert), 30))
        failures = log.wait("tls_handshake_failed", 2)
    assert "certificate" in failures[0]["reason"], failures  # a stranger's certificate
    assert "CERTIFICATE" in failures[1]["reason"], failures  # none at all
    assert all(f["peer"].startswith("127.0.0.1:") for f in failures)
    # No certificate contents in the log: the stranger's name never appears.
    assert "stranger.example" not in repr(log.events)


def test_tls_serves_and_drains_on_either_event_loop(pki, pki_tls, scenarios, server_loop):
    """The server promises the standard asyncio loop as well as uvloop; their TLS
    transports differ (asyncio's cannot report its buffer once closed).  Here server and
    client share one loop, as an embedding would run it (not ServerThread's own)."""
    from serving import new_loop, server_config

    from engine.server.server import Server

    d = pki_tls["dir"]
    cfg = server_config(
        pki, **{"server.tls_cert": str(d / "server.pem"), "server.tls_key": str(d / "server.pem")}
    )

    async def go():
        srv = Server(cfg)
        await srv.start()
        try:
            ctx = client_context(pki_tls)
            async with await Client.connect("127.0.0.1", srv.port, ssl=ctx) as client:
                batch = scenarios.presentations(
                    [Verdict.OK, Verdict.EXPIRED], int(time.time() * 1000)
                )
                verdicts = [r.verdict for r in await client.verify_batch(batch)]
        finally:
            await srv.drain()  # the client has gone: its transport is closed already
        return verdicts

    loop = new_loop(server_loop)
    try:
        assert loop.run_until_complete(asyncio.wait_for(go(), 30)) == [Verdict.OK, Verdict.EXPIRED]
    finally:
        loop.close()


def test_certificates_rotate_on_reload_without_a_restart(start_server, tmp_path, scenarios):
    """A new server certificate (from a new CA) and a new client CA take effect for new
    connections at a reload; open connections keep theirs; a broken file is refused and
    the certificate in service stays."""
    old_ca, new_ca = trustme.CA(), trustme.CA()
    old_clients, new_clients = trustme.CA(), trustme.CA()
    cert, client_ca = tmp_path / "server.pem", tmp_path / "clients.pem"
    old_ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    old_clients.cert_pem.write_to_path(str(client_ca))
    srv = start_server(
        server__tls_cert=str(cert), server__tls_key=str(cert), server__tls_client_ca=str(client_ca)
    )
    (pres,) = scenarios.presentations([Verdict.OK], int(time.time() * 1000))

    def context(server_ca, client_cert):
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        server_ca.configure_trust(ctx)
        client_cert.configure_cert(ctx)
        return ctx

    old_ctx = context(old_ca, old_clients.issue_cert("network-1.example"))
    new_ctx = context(new_ca, new_clients.issue_cert("network-1.example"))

    async def ping(ctx) -> bool:
        async with await Client.connect("127.0.0.1", srv.port, ssl=ctx) as client:
            return bool(await client.ping())

    async def go():
        assert await ping(old_ctx)
        async with await Client.connect("127.0.0.1", srv.port, ssl=old_ctx) as kept:
            # Rotate both: the server's certificate and the CA clients must come from.
            new_ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
            new_clients.cert_pem.write_to_path(str(client_ca))
            with LogEvents() as log:
                assert await asyncio.wrap_future(
                    asyncio.run_coroutine_threadsafe(srv.server.reload("test"), srv.loop)
                )
            assert [e["what"] for e in log.named("reloaded")] == ["tls"]
            assert (await kept.verify(pres)).verdict is Verdict.OK  # its session stays
        assert await ping(new_ctx)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await ping(old_ctx)
        # A broken certificate file: refused, the rotated one stays in service.
        cert.write_text("not a certificate")
        with LogEvents() as log:
            assert not await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(srv.server.reload("test"), srv.loop)
            )
        (failed,) = log.named("reload_failed")
        assert failed["what"] == "tls" and "TLS" in failed["error"]
        assert await ping(new_ctx)

    asyncio.run(asyncio.wait_for(go(), 60))
