"""Batch Ed25519 signature verification: the friendly layer over engine._core.

    ok = verify_batch(messages, signatures, public_keys)

Each argument is a sequence of byte strings, or a 2-D C-contiguous uint8 numpy array
with one row per item (used without copying).  The result is a numpy bool array.
Verification runs in C with the GIL released, split across ``threads`` threads
(default: every core).  A signature that is not 64 bytes or a key that is not 32
bytes is simply invalid for that item.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine import _core

__all__ = ["METHODS", "keypairs_from_seeds", "sign_batch", "verify_batch"]

METHODS = {"single": _core.METHOD_SINGLE}

BytesColumn = Sequence[bytes] | np.ndarray


def verify_batch(
    messages: BytesColumn,
    signatures: BytesColumn,
    public_keys: BytesColumn,
    *,
    threads: int | None = None,
    method: str = "single",
) -> np.ndarray:
    """ok[i] is True iff signatures[i] is valid for messages[i] under public_keys[i]."""
    try:
        code = METHODS[method]
    except KeyError:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}") from None
    return _core.verify_batch(messages, signatures, public_keys, threads, code)


def sign_batch(
    messages: BytesColumn, secret_keys: BytesColumn, *, threads: int | None = None
) -> np.ndarray:
    """(n, 64) uint8 array of signatures under 64-byte libsodium secret keys."""
    return _core.sign_batch(messages, secret_keys, threads)


def keypairs_from_seeds(
    seeds: np.ndarray, *, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(public keys (n, 32), secret keys (n, 64)) derived from (n, 32) seeds."""
    return _core.keypairs_from_seeds(seeds, threads)
