"""PROXY protocol v2 (engine/server/proxy_protocol.py): the parser against a small
encoder written here from haproxy's doc/proxy-protocol.txt, at every split point,
with TLVs and with each malformation; ``server.proxy_protocol_from`` validated; and the
server reading the header on plain TCP and before TLS (tests/test_haproxy.py has it
behind a real HAProxy)."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.server import config
from engine.server import proxy_protocol as pp
from engine.wire import protocol as proto
from engine.wire.framing import FrameDecoder

SIG = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])


def encode(
    src: tuple[str, int] | None = None,
    dst: tuple[str, int] | None = None,
    *,
    command: int = 1,
    version: int = 2,
    fam: int | None = None,
    tlvs: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
    extra: bytes = b"",
    length: int | None = None,
) -> bytes:
    """A v2 header; ``src`` None: LOCAL's (or UNSPEC's) empty address block."""
    if src is None:
        block = b""
        fam = 0x00 if fam is None else fam
    elif ":" in src[0]:
        dst = dst or ("::1", 7700)
        block = socket.inet_pton(socket.AF_INET6, src[0]) + socket.inet_pton(
            socket.AF_INET6, dst[0]
        )
        block += struct.pack(">HH", src[1], dst[1])
        fam = 0x21 if fam is None else fam
    else:
        dst = dst or ("127.0.0.1", 7700)
        block = socket.inet_aton(src[0]) + socket.inet_aton(dst[0])
        block += struct.pack(">HH", src[1], dst[1])
        fam = 0x11 if fam is None else fam
    for kind, value in tlvs:
        block += bytes([kind]) + struct.pack(">H", len(value)) + value
    block += extra
    n = len(block) if length is None else length
    return SIG + bytes([(version << 4) | command, fam]) + struct.pack(">H", n) + block


V4 = encode(("203.0.113.7", 51234))
V6 = encode(("2001:db8::17", 443), ("2001:db8::1", 7700))
LOCAL = encode(None, command=0)
TLVS = encode(("198.51.100.2", 1), tlvs=[(0x04, b""), (0x01, b"h2"), (0x05, b"u" * 40)])


def test_the_encoder_matches_the_specifications_example_layout():
    # 16 fixed bytes, then 4+4+2+2 for TCP over IPv4 (doc/proxy-protocol.txt 2.2).
    assert V4[:12] == b"\r\n\r\n\x00\r\nQUIT\n"
    assert V4[12:16] == b"\x21\x11\x00\x0c" and len(V4) == 28
    assert V4[16:20] == bytes([203, 0, 113, 7]) and V4[24:26] == (51234).to_bytes(2, "big")


@pytest.mark.parametrize(
    "header, source, command",
    [
        (V4, ("203.0.113.7", 51234), pp.PROXY),
        (V6, ("2001:db8::17", 443), pp.PROXY),
        (LOCAL, None, pp.LOCAL),
        (TLVS, ("198.51.100.2", 1), pp.PROXY),
        (encode(None, command=1), None, pp.PROXY),  # UNSPEC: the real endpoints stay
        # LOCAL skips whatever address block it carries, family included.
        (encode(("10.0.0.1", 9), command=0, fam=0x31), None, pp.LOCAL),
        (encode(("::ffff:10.1.2.3", 80)), ("::ffff:10.1.2.3", 80), pp.PROXY),
    ],
)
def test_valid_headers_at_every_split_point(header, source, command):
    frames = proto.request(5, "ping") + proto.request(6, "status")
    stream = header + frames
    for cut in range(len(stream) + 1):
        reader = pp.HeaderReader()
        first = reader.feed(stream[:cut])
        if cut < len(header):
            assert first is None and reader.pending == cut
            got, rest = reader.feed(stream[cut:])
        else:
            got, rest = first
            rest += stream[cut:]  # after the header, bytes go to the frame decoder
        assert got.source == source and got.command == command and got.size == len(header)
        assert rest == stream[len(header) :]  # the frames, untouched
        dec = FrameDecoder(1 << 20)
        assert len(dec.feed(rest)) == 2


def test_one_byte_at_a_time_and_wanted_never_reads_past_the_header():
    for header in (V4, V6, LOCAL, TLVS):
        reader = pp.HeaderReader()
        pos = 0
        while True:
            want = reader.wanted()
            assert pos + want <= len(header)  # a TLS reader asks for no byte of the hello
            done = reader.feed(header[pos : pos + 1])
            pos += 1
            if done is not None:
                assert pos == len(header) and done[1] == b""
                break


def test_destination_and_size():
    got = pp.parse(V6)
    assert got.destination == ("2001:db8::1", 7700) and got.size == 52


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\x00\x00\x00\x0f\x82", "signature"),  # a protocol frame where a header belongs
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "signature"),  # v1 is refused
        (SIG[:5] + b"\x01", "signature"),  # refused at the first wrong byte
        (encode(("1.2.3.4", 1), version=1), "version 1"),
        (encode(("1.2.3.4", 1), version=3), "version 3"),
        (encode(("1.2.3.4", 1), command=2), "unknown command 0x2"),
        (encode(("1.2.3.4", 1), command=0xF), "unknown command"),
        (encode(("1.2.3.4", 1), fam=0x12), "UDP over IPv4"),
        (encode(("::1", 1), fam=0x22), "UDP over IPv6"),
        (encode(None, extra=b"x" * 216, fam=0x31), "unix stream"),
        (encode(None, extra=b"x" * 216, fam=0x32), "unix datagram"),
        (encode(("1.2.3.4", 1), fam=0x41), "unknown address family"),
        (encode(("1.2.3.4", 1), fam=0x13), "unknown address family or transport"),
        (encode(("1.2.3.4", 1), fam=0x10), "unsupported address family"),
        (encode(("1.2.3.4", 1), length=11), "shorter than the addresses (12"),
        (encode(("::1", 1), length=35), "shorter than the addresses (36"),
        (encode(("1.2.3.4", 1), extra=b"\x04\x00"), "truncated TLV"),
        (encode(("1.2.3.4", 1), extra=b"\x04\x00\x05ab"), "runs past the end"),
        (encode(("1.2.3.4", 1), tlvs=[(0x05, b"u" * 506)]), "537 bytes: more than 536"),
        (SIG + b"\x21\x11\xff\xff", "65551 bytes"),  # refused before any address byte
    ],
)
def test_malformed_headers(data, reason):
    reason = re.escape(reason)
    with pytest.raises(pp.ProxyProtocolError, match=reason):
        pp.parse(data)
    # Split anywhere, the same error, as soon as the bytes show it.
    for cut in range(len(data) + 1):
        reader = pp.HeaderReader()
        with pytest.raises(pp.ProxyProtocolError, match=reason):
            reader.feed(data[:cut])
            reader.feed(data[cut:])


def test_the_largest_header_is_accepted():
    header = encode(("1.2.3.4", 1), tlvs=[(0x05, b"u" * 505)])
    assert len(header) == pp.MAX_HEADER_BYTES == 536
    assert pp.parse(header).source == ("1.2.3.4", 1)


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)
tlv = st.tuples(st.integers(0, 255), st.binary(max_size=60))


@given(
    src=st.one_of(st.tuples(ipv4, ports), st.tuples(ipv6, ports)),
    dport=ports,
    tlvs=st.lists(tlv, max_size=6),
    tail=st.binary(max_size=40),
    cuts=st.lists(st.integers(0, 600), max_size=5),
)
def test_property_any_valid_header_split_anywhere(src, dport, tlvs, tail, cuts):
    dst = ("10.0.0.1", dport) if ":" not in src[0] else ("::1", dport)
    header = encode(src, dst, tlvs=tlvs)
    if len(header) > pp.MAX_HEADER_BYTES:
        with pytest.raises(pp.ProxyProtocolError, match="more than 536"):
            pp.parse(header)
        return
    stream = header + tail
    reader = pp.HeaderReader()
    done = None
    pos = 0
    for cut in sorted(c for c in cuts if c < len(stream)):
        assert done is None
        done = reader.feed(stream[pos:cut])
        pos = cut
        if done is not None:
            break
    if done is None:
        done = reader.feed(stream[pos:])
    else:
        done = (done[0], done[1] + stream[pos:])
    got, rest = done
    # Addresses compare as addresses (text forms differ: "::ffff:0.0.0.0", "::ffff:0:0").
    ip = ipaddress.ip_address
    assert (ip(got.source[0]), got.source[1]) == (ip(src[0]), src[1])
    assert (ip(got.destination[0]), got.destination[1]) == (ip(dst[0]), dst[1])
    assert rest == tail


@given(st.binary(max_size=600))
def test_property_arbitrary_bytes_never_escape_as_another_error(data):
    reader = pp.HeaderReader()
    try:
        done = reader.feed(data)
    except pp.ProxyProtocolError:
        return
    if done is None:
        assert len(data) < pp.MAX_HEADER_BYTES and SIG.startswith(data[:12])
    else:
        assert done[0].size <= pp.MAX_HEADER_BYTES and data.startswith(SIG)


# --- the setting ----------------------------------------------------------------------


def _cfg(**server):
    cfg = config.Config()
    cfg.trust.trust_list, cfg.trust.root_public_key = "t", "00" * 32
    for key, value in server.items():
        cfg.set(f"server.{key}", value, "test")
    return cfg


def test_proxy_protocol_from_validation():
    cfg = _cfg(proxy_protocol_from="10.0.0.0/8, 192.0.2.1,2001:db8::/32").validate()
    nets = pp.networks(cfg.server.proxy_protocol_from)
    assert pp.from_balancer(nets, "10.200.0.1") and pp.from_balancer(nets, "192.0.2.1")
    assert pp.from_balancer(nets, "::ffff:10.1.1.1")  # an IPv4 client of a dual-stack port
    assert pp.from_balancer(nets, "2001:db8::5")
    assert not pp.from_balancer(nets, "192.0.2.2") and not pp.from_balancer(nets, "127.0.0.1")
    for bad in ("10.0.0.0/33", "balancer.example", "10.0.0.256"):
        with pytest.raises(
            config.ConfigError, match=r"server\.proxy_protocol_from: .* is not an IP"
        ):
            _cfg(proxy_protocol_from=[bad]).validate()
    with pytest.raises(config.ConfigError, match=r"server\.drain_notice_s"):
        _cfg(drain_notice_s=-1).validate()
    with pytest.raises(config.ConfigError, match="ports"):
        _cfg(agent_port=70000).validate()


# --- the server -----------------------------------------------------------------------


def _exchange(port: int, data: bytes, want: int = 1) -> list[bytes]:
    """Sends ``data`` and reads ``want`` response frames."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        dec, frames = FrameDecoder(1 << 20), []
        while len(frames) < want:
            chunk = s.recv(65536)
            assert chunk, f"closed after {frames}"
            frames += dec.feed(chunk)
        return frames


def _closed_without_answer(port: int, data: bytes) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        try:
            return s.recv(65536) == b""
        except ConnectionResetError:
            return True


async def _peers(server) -> list[str]:
    return sorted(c.peer for c in server.connections)


def test_server_reads_the_header_from_balancers_only(start_server):
    from serving import LogEvents

    srv = start_server(server__proxy_protocol_from=["127.0.0.1/32"], log__audit=True)
    ping = proto.request(1, "ping")
    pong = proto.response(1, {"pong": True})[4:]
    with LogEvents() as log:
        # Header and frames in one write, and the header split from the frames.
        assert _exchange(srv.port, encode(("198.51.100.9", 4242)) + ping) == [pong]
        assert _exchange(srv.port, LOCAL + ping) == [pong]
        # Held open: the connection's peer is the client the header names.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(encode(("2001:db8::9", 8080)))
            s.sendall(ping)
            assert FrameDecoder(1 << 20).feed(s.recv(65536)) == [pong]
            assert "2001:db8::9:8080" in srv.call(_peers(srv.server))
        # A client from the balancer's address without a header is refused, unanswered.
        assert _closed_without_answer(srv.port, ping)
        assert _closed_without_answer(srv.port, encode(("1.2.3.4", 1), fam=0x12))
        errors = log.wait("proxy_protocol_error", count=2)
    assert "signature" in errors[0]["reason"] and errors[0]["peer"].startswith("127.0.0.1:")
    assert "UDP" in errors[1]["reason"]
    assert srv.server.metrics.protocol_errors.labels(pp.ERROR_CODE)._value.get() == 2


def test_server_without_the_setting_never_reads_a_header(start_server):
    srv = start_server(server__proxy_protocol_from=["192.0.2.0/24"])
    # From an address that is not a balancer's, a header is just bytes: not a frame.
    frames = _exchange(srv.port, proto.request(1, "ping"))
    assert frames == [proto.response(1, {"pong": True})[4:]]
    assert not srv.server.connections or all(
        c.proxy_header is None for c in list(srv.server.connections)
    )


def test_server_closes_a_balancer_connection_whose_header_never_completes(start_server):
    from serving import LogEvents

    srv = start_server(server__proxy_protocol_from=["127.0.0.1"], server__frame_timeout_s=0.2)
    with LogEvents() as log, socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(V4[:10])
        event = log.wait("proxy_protocol_error")[0]
        assert s.recv(65536) == b""  # closed, nothing answered
    assert event["reason"] == "header not completed in time"


def test_tls_the_header_precedes_the_handshake(start_server, tmp_path):
    import ssl

    import trustme
    from serving import LogEvents

    ca = trustme.CA()
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    srv = start_server(
        server__proxy_protocol_from=["127.0.0.1"],
        server__tls_cert=str(tmp_path / "server.pem"),
        server__tls_key=str(tmp_path / "server.pem"),
    )
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)

    async def go():
        loop = asyncio.get_running_loop()
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        raw.sendall(encode(("203.0.113.50", 6000)))
        raw.setblocking(False)
        reader, writer = await asyncio.open_connection(
            sock=raw, ssl=ctx, server_hostname="localhost"
        )
        writer.write(proto.request(3, "ping"))
        head = await reader.readexactly(4)
        body = await reader.readexactly(int.from_bytes(head, "big"))
        peers = await loop.run_in_executor(None, srv.call, _peers(srv.server))
        writer.close()
        return body, peers

    body, peers = asyncio.run(go())
    assert body == proto.response(3, {"pong": True})[4:]
    assert "203.0.113.50:6000" in peers
    with LogEvents() as log:
        # A TLS client hello where the header belongs: refused before any handshake.
        with (
            pytest.raises((ssl.SSLError, ConnectionError, OSError)),
            socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost"),
        ):
            pass
        assert "signature" in log.wait("proxy_protocol_error")[0]["reason"]
