"""PROXY protocol version 2 (the binary form; haproxy's doc/proxy-protocol.txt): the
header a load balancer sends first on each connection it relays, naming the real
client.

Only connections from ``server.proxy_protocol_from`` are read for a header, and those
must start with one (docs/PROTOCOL.md, "PROXY protocol").  What is accepted:

- version 2 only (the text form, v1, is refused: the balancer is ours to configure);
- command PROXY with TCP over IPv4 (``\\x11``) or IPv6 (``\\x21``): the source address
  becomes the connection's peer; with the UNSPEC family (``\\x00``) the connection's own
  endpoints are kept, as the specification allows;
- command LOCAL (the balancer's own health checks): its address block is skipped
  whatever it holds, and the connection's own endpoints are kept;
- TLVs after the addresses are checked to fit the header exactly and skipped;
- at most ``MAX_HEADER_BYTES`` (536) in all: the specification's bound for a header
  (the smallest TCP segment every host must accept), so a sender never needs more.

UDP, unix sockets, unknown versions, commands, families and transports, a length too
short for the addresses, and bytes that are not a v2 signature are errors
(``ProxyProtocolError``, with the reason); the connection is then closed.  The
signature is checked byte by byte as it arrives, so a client that sends frames where
a header belongs is refused at its first byte rather than after 16.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import struct
from collections.abc import Iterable

from engine.errors import EsscError

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
FIXED_BYTES = 16  # signature, version/command, family/transport, length
MAX_HEADER_BYTES = 536
MAX_LENGTH = MAX_HEADER_BYTES - FIXED_BYTES

LOCAL, PROXY = 0x0, 0x1
TCP4, TCP6, UNSPEC = 0x11, 0x21, 0x00
_ADDRESS_BYTES = {TCP4: 12, TCP6: 36}
_REFUSED = {
    0x12: "UDP over IPv4",
    0x22: "UDP over IPv6",
    0x31: "unix stream",
    0x32: "unix datagram",
}

# The metric label and log event of a refused header.
ERROR_CODE = "proxy_protocol"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyProtocolError(EsscError):
    """A PROXY protocol header that cannot be used; the message says why."""


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyHeader:
    command: int  # LOCAL or PROXY
    # The real client and the address it connected to; None: keep the connection's own
    # (LOCAL, or PROXY with the UNSPEC family).
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    size: int  # bytes of the header, 16 + its length field


def parse(buf: bytes | bytearray | memoryview) -> ProxyHeader | None:
    """The header at the start of ``buf``; None while more bytes are needed (never
    more than ``MAX_HEADER_BYTES`` in all).  ProxyProtocolError when it cannot be one."""
    view = memoryview(buf)
    n = min(len(view), len(SIGNATURE))
    if view[:n] != SIGNATURE[:n]:
        raise ProxyProtocolError("not a PROXY protocol v2 header (signature)")
    if len(view) < FIXED_BYTES:
        return None
    ver_cmd, fam, length = view[12], view[13], struct.unpack_from(">H", view, 14)[0]
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"version {ver_cmd >> 4} (only 2 is accepted)")
    command = ver_cmd & 0x0F
    if command not in (LOCAL, PROXY):
        raise ProxyProtocolError(f"unknown command {command:#x}")
    if length > MAX_LENGTH:
        raise ProxyProtocolError(
            f"header of {FIXED_BYTES + length} bytes: more than {MAX_HEADER_BYTES}"
        )
    size = FIXED_BYTES + length
    if command == LOCAL:
        # The balancer's own connection: the address block is skipped unread, family
        # included (the specification's rule for LOCAL).
        return ProxyHeader(LOCAL, None, None, size) if len(view) >= size else None
    if fam >> 4 > 3 or fam & 0x0F > 2:
        raise ProxyProtocolError(f"unknown address family or transport {fam:#04x}")
    if fam in _REFUSED:
        raise ProxyProtocolError(f"{_REFUSED[fam]} is not supported (TCP only)")
    if fam != UNSPEC and fam not in _ADDRESS_BYTES:
        raise ProxyProtocolError(f"unsupported address family and transport {fam:#04x}")
    need = _ADDRESS_BYTES.get(fam, 0)
    if length < need:
        raise ProxyProtocolError(f"length {length} is shorter than the addresses ({need} bytes)")
    if len(view) < size:
        return None
    _check_tlvs(view[FIXED_BYTES + need : size])
    if fam == UNSPEC:
        return ProxyHeader(PROXY, None, None, size)
    a = FIXED_BYTES
    if fam == TCP4:
        af, width = socket.AF_INET, 4
    else:
        af, width = socket.AF_INET6, 16
    src = socket.inet_ntop(af, view[a : a + width])
    dst = socket.inet_ntop(af, view[a + width : a + 2 * width])
    sport, dport = struct.unpack_from(">HH", view, a + 2 * width)
    return ProxyHeader(PROXY, (src, sport), (dst, dport), size)


def _check_tlvs(view: memoryview) -> None:
    """Type (1 byte), length (2, big-endian), value: they must fill the rest exactly."""
    i = 0
    while i < len(view):
        if len(view) - i < 3:
            raise ProxyProtocolError(f"truncated TLV at offset {i} of the TLV block")
        (length,) = struct.unpack_from(">H", view, i + 1)
        i += 3 + length
        if i > len(view):
            raise ProxyProtocolError("a TLV runs past the end of the header")


class HeaderReader:
    """Incremental: ``feed`` the bytes as they arrive (split anywhere); once the header
    is complete it returns it, with what followed it in the same bytes."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> tuple[ProxyHeader, bytes] | None:
        if self._buf:
            self._buf += data
            data = bytes(self._buf)  # at most MAX_HEADER_BYTES: parse returns None below it
        header = parse(data)
        if header is None:
            self._buf[:] = data
            return None
        self._buf.clear()
        return header, data[header.size :]

    def wanted(self) -> int:
        """How many more bytes the header needs at least (so a reader that must not
        read past it, the TLS accept, asks for no more)."""
        if len(self._buf) < FIXED_BYTES:
            return FIXED_BYTES - len(self._buf)
        length: int = struct.unpack_from(">H", self._buf, 14)[0]
        return max(1, FIXED_BYTES + length - len(self._buf))


def networks(specs: Iterable[str]) -> tuple[Network, ...]:
    """``server.proxy_protocol_from``: IPs or CIDR blocks (ValueError names a bad one)."""
    out = []
    for spec in specs:
        try:
            out.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{spec!r} is not an IP address or CIDR block") from None
    return tuple(out)


def from_balancer(nets: tuple[Network, ...], host: str) -> bool:
    """Whether a connection from ``host`` must start with a header.  An IPv4 client of
    a dual-stack listener shows as ``::ffff:a.b.c.d`` and is matched as IPv4."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in nets)
