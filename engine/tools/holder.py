"""The holder's side: turning a credential into a presentation (the QR payload).

In production this runs in the holder's app; the engine ships it for demos, tests,
test vectors and the load generator.  ``present_batch`` signs in native batches so
load generation keeps up with the rates it asks for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import nacl.signing
import numpy as np

from engine.formats import encoding as enc
from engine.formats.credentials import NONCE_BYTES, PRESENTATION_TAG, PRESENTATION_VERSION, Purpose
from engine.sigverify import keypairs_from_seeds, sign_batch


def present(
    credential: bytes,
    holder_seed: bytes,
    *,
    timestamp_ms: int | None = None,
    nonce: bytes | None = None,
    purpose: Purpose = Purpose.PAYMENT,
) -> bytes:
    """One encoded presentation, signed by the holder key (docs/FORMATS.md, section 4)."""
    body = presentation_body(
        credential,
        int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
        os.urandom(NONCE_BYTES) if nonce is None else nonce,
        purpose,
    )
    return enc.pack([body, nacl.signing.SigningKey(holder_seed).sign(body).signature])


def presentation_body(credential: bytes, timestamp_ms: int, nonce: bytes, purpose: int) -> bytes:
    return enc.pack(
        [PRESENTATION_TAG, PRESENTATION_VERSION, credential, timestamp_ms, nonce, int(purpose)]
    )


class HolderKeys:
    """Holder secret keys expanded once, for signing many presentations quickly."""

    def __init__(self, seeds: Sequence[bytes]):
        arr = np.frombuffer(b"".join(seeds), dtype=np.uint8).reshape(len(seeds), 32)
        _, sks = keypairs_from_seeds(arr)
        self.secret_keys = [row.tobytes() for row in sks]

    def __len__(self) -> int:
        return len(self.secret_keys)


def present_batch(
    credentials: Sequence[bytes],
    holder_keys: HolderKeys,
    indices: Sequence[int],
    timestamps_ms: Sequence[int],
    purposes: Sequence[int],
    *,
    threads: int | None = None,
) -> list[bytes]:
    """Presentations of credentials[indices[i]] at timestamps_ms[i], with fresh nonces."""
    n = len(indices)
    nonces = os.urandom(NONCE_BYTES * n)
    bodies = [
        presentation_body(
            credentials[k],
            timestamps_ms[i],
            nonces[NONCE_BYTES * i : NONCE_BYTES * (i + 1)],
            purposes[i],
        )
        for i, k in enumerate(indices)
    ]
    sigs = sign_batch(bodies, [holder_keys.secret_keys[k] for k in indices], threads=threads)
    return [enc.pack([body, sigs[i].tobytes()]) for i, body in enumerate(bodies)]
