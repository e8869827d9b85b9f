"""Batch Ed25519 signature verification: the friendly layer over engine._core.

    ok = verify_batch(messages, signatures, public_keys)

Each argument is a sequence of byte strings, or a 2-D C-contiguous uint8 numpy array
with one row per item (used without copying).  The result is a numpy bool array.
Verification runs in C with the GIL released, split across ``threads`` threads
(default: every core).  A signature that is not 64 bytes or a key that is not 32
bytes is simply invalid for that item.

Validity is the rule of docs/FORMATS.md section 7 (canonical encodings, no
small-order A or R, S < L, the cofactored equation), whichever method is used:

- ``"single"``: libsodium per item; where libsodium (which uses the stricter
  cofactorless equation) rejects, the core's own cofactored check decides.
- ``"batch"``: randomised batch verification: each thread checks its contiguous
  range with one multi-scalar multiplication (sub-batches of at most 1024 items),
  and finds bad items by bisection when the equation fails.
- ``"auto"`` (default): ``"batch"`` where a thread's range is large enough to gain,
  ``"single"`` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine import _core

__all__ = ["METHODS", "keypairs_from_seeds", "sign_batch", "use_simd", "verify_batch"]

METHODS = {
    "auto": _core.METHOD_AUTO,
    "batch": _core.METHOD_BATCH,
    "single": _core.METHOD_SINGLE,
}

BytesColumn = Sequence[bytes] | np.ndarray


def verify_batch(
    messages: BytesColumn,
    signatures: BytesColumn,
    public_keys: BytesColumn,
    *,
    threads: int | None = None,
    method: str = "auto",
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


def use_simd(enabled: bool | None = None) -> bool:
    """Whether the AVX-512 IFMA arithmetic is in use (it is by default where the CPU has
    it); ``use_simd(False)`` switches to the portable 64-bit code.  Returns the state
    after the call.  Verdicts are the same either way."""
    if enabled is not None:
        _core.ed25519_simd(enabled)
    return _core.ed25519_simd()
