"""What the verifier asks of revocation data, and a small in-memory implementation.

The memory-mapped store (engine.revocation.store) is the production implementation; the
in-memory one serves tests, demos and baselines.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

CARD = "card"  # id: the card number as ASCII bytes
CREDENTIAL = "credential"  # id: the 16-byte credential serial
KINDS = (CARD, CREDENTIAL)

# The ids of one look-up: byte strings, or a numpy array of fixed-width byte strings
# (what VerifyBatch.candidates hands out: S9 card numbers, S16 serials).
Ids: TypeAlias = "Sequence[bytes] | npt.NDArray[np.bytes_]"


class RevocationSource(Protocol):
    @property
    def sequence(self) -> int: ...

    @property
    def created_at(self) -> float:
        """Unix time of the newest data applied (snapshot or delta)."""
        ...

    def contains(self, kind: str, ids: Ids) -> npt.NDArray[np.bool_]:
        """Bool array: ids[i] of this kind is revoked."""
        ...


class SetRevocation:
    """Revocation data held in Python sets."""

    def __init__(
        self,
        cards: Iterable[bytes] = (),
        credentials: Iterable[bytes] = (),
        *,
        sequence: int = 0,
        created_at: float | None = None,
    ):
        self._sets = {CARD: set(cards), CREDENTIAL: set(credentials)}
        self._padded: dict[tuple[str, int], set[bytes]] = {}
        self.sequence = sequence
        self.created_at = time.time() if created_at is None else created_at

    def contains(self, kind: str, ids: Ids) -> npt.NDArray[np.bool_]:
        try:
            revoked = self._sets[kind]
        except KeyError:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}") from None
        if isinstance(ids, np.ndarray) and ids.dtype.kind == "S":
            # numpy hands out a fixed-width element without its trailing NUL bytes, so a
            # serial ending in 0x00 would be missed: compare whole elements, padded alike.
            width = ids.dtype.itemsize
            padded = self._padded.get((kind, width))
            if padded is None:
                padded = {x.ljust(width, b"\0") for x in revoked if len(x) <= width}
                self._padded[kind, width] = padded
            raw = ids.tobytes()
            items = (raw[k : k + width] in padded for k in range(0, len(raw), width))
            return np.fromiter(items, dtype=np.bool_, count=len(ids))
        return np.fromiter((i in revoked for i in ids), dtype=np.bool_, count=len(ids))
