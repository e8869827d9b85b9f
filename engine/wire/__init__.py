"""The network protocol, both ends (docs/PROTOCOL.md).

- ``framing``: 4-byte big-endian length prefix, then one msgpack map.
- ``protocol``: request and response messages: parsing with clear errors, encoding.
- ``client``: the asyncio client library (pipelining, TLS), one connection.
- ``pool``: ``FleetClient``, the client a payment network embeds: connections to
  several nodes, deadlines, retries of BUSY and lost answers, failover.

The server's hot path parses and encodes the same messages in C
(engine/native/wire.c); tests hold the two to the same bytes.
"""
