"""Redis Cluster's key slots and the map of which master serves which slot.

A key's slot is CRC16 (XMODEM) of the key, or of its ``{hash tag}`` when it has one,
modulo 16384.  The replay keys spread over every master; the marker keys have a tag,
chosen so each master holds its own marker.  A batch's slots are computed in the
native core (``_core.redis_slots``); ``key_slot`` here is the reference it is tested
against.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

SLOTS = 16384
# What reading a malformed CLUSTER SLOTS reply can raise (the store catches these).
BAD_REPLY = (ValueError, IndexError, TypeError, UnicodeDecodeError)


def _crc16_table() -> npt.NDArray[np.uint16]:
    table = np.zeros(256, dtype=np.uint16)
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table[byte] = crc & 0xFFFF
    return table


_TABLE = _crc16_table()
_TABLE_LIST = _TABLE.tolist()


def crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE_LIST[((crc >> 8) ^ b) & 0xFF]
    return crc


def key_slot(key: bytes) -> int:
    """The slot of one key, hash tags included (Redis's keyHashSlot)."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc16(key) % SLOTS


def tag_for_slots(first: int, last: int) -> bytes:
    """A hash tag whose slot lies in [first, last] (for a master's marker key)."""
    n = 0
    while not first <= crc16(b"%d" % n) % SLOTS <= last:
        n += 1
    return b"%d" % n


@dataclasses.dataclass(frozen=True)
class SlotMap:
    """Which master (an index into ``masters``) serves each slot; -1: none."""

    masters: tuple[tuple[str, int], ...]  # (host, port) of each master
    owner: npt.NDArray[np.int16]  # (SLOTS,)
    first_slot: tuple[int, ...]  # per master, the first slot of its first range
    last_slot: tuple[int, ...]

    @classmethod
    def from_cluster_slots(cls, reply: object) -> SlotMap:
        """From a CLUSTER SLOTS reply: [[first, last, [host, port, id, ...], replicas...]].
        A reply of any other shape raises one of ``BAD_REPLY``."""
        if not isinstance(reply, list) or not reply:
            raise ValueError(f"CLUSTER SLOTS answered {reply!r}")
        masters: list[tuple[str, int]] = []
        ranges: dict[int, tuple[int, int]] = {}
        owner = np.full(SLOTS, -1, dtype=np.int16)
        for entry in reply:
            first, last, master = int(entry[0]), int(entry[1]), entry[2]
            if not 0 <= first <= last < SLOTS:
                raise ValueError(f"CLUSTER SLOTS: slot range {first}-{last}")
            if not isinstance(master, list) or not isinstance(master[0], bytes):
                raise ValueError(f"CLUSTER SLOTS: master {master!r}")
            host = master[0].decode("ascii")
            port = int(master[1])
            if not 0 < port < 65536 or not host:
                raise ValueError(f"CLUSTER SLOTS: master address {master[:2]!r}")
            address = (host, port)
            if address not in masters:
                masters.append(address)
            k = masters.index(address)
            owner[first : last + 1] = k
            if k not in ranges:
                ranges[k] = (first, last)
        return cls(
            tuple(masters),
            owner,
            tuple(ranges[k][0] for k in range(len(masters))),
            tuple(ranges[k][1] for k in range(len(masters))),
        )

    @property
    def complete(self) -> bool:
        return bool((self.owner >= 0).all())

    def assignment(self) -> dict[tuple[str, int], frozenset[int]]:
        """Each master's slots, for telling a failover or a resharding from no change."""
        return {
            m: frozenset(np.flatnonzero(self.owner == k).tolist())
            for k, m in enumerate(self.masters)
        }
