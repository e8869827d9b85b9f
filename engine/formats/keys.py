"""Key files: Ed25519 seeds kept in mode-0600 JSON files, public keys beside them.

A private key file never leaves the machine it was made on in the demo set-up, and
its seed is never printed (``python -m engine inspect`` redacts it).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import nacl.signing

from engine.errors import EsscError

PRIVATE_KIND = "essc-private-key"
PUBLIC_KIND = "essc-public-key"


class KeyFileError(EsscError):
    """A key file that cannot be used; the message names the file."""


def write_private(path: pathlib.Path, seed: bytes, role: str, key_id: str) -> None:
    """Create the file with mode 0600 from the start (never world-readable, not even briefly).

    ``seed`` is an Ed25519 seed, or for the citizen-digest key the 32-byte secret.
    """
    doc = {"kind": PRIVATE_KIND, "role": role, "key_id": key_id, "seed": seed.hex()}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def write_public(path: pathlib.Path, public_key: bytes, role: str, key_id: str) -> None:
    doc = {"kind": PUBLIC_KIND, "role": role, "key_id": key_id, "public_key": public_key.hex()}
    path.write_text(json.dumps(doc, indent=1) + "\n")


def _read(path: pathlib.Path, kind: str) -> dict[str, Any]:
    try:
        doc = json.loads(pathlib.Path(path).read_text())
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read: {e.strerror}") from None
    except ValueError:
        raise KeyFileError(f"{path}: not a key file (invalid JSON)") from None
    if not isinstance(doc, dict) or doc.get("kind") != kind:
        raise KeyFileError(f"{path}: not an {kind} file")
    return doc


def read_secret(path: pathlib.Path) -> tuple[bytes, str]:
    """(32-byte seed, key id)."""
    doc = _read(path, PRIVATE_KIND)
    try:
        seed = bytes.fromhex(doc["seed"])
        if len(seed) != 32:
            raise ValueError
        return seed, str(doc["key_id"])
    except (KeyError, ValueError, TypeError):
        raise KeyFileError(f"{path}: seed missing or not 32 hex bytes") from None


def read_private(path: pathlib.Path) -> tuple[nacl.signing.SigningKey, str]:
    """(signing key, key id)."""
    seed, key_id = read_secret(path)
    return nacl.signing.SigningKey(seed), key_id


def read_public(path: pathlib.Path) -> bytes:
    doc = _read(path, PUBLIC_KIND)
    return parse_public_key(doc.get("public_key"), str(path))


def parse_public_key(value: object, where: str) -> bytes:
    """A 32-byte Ed25519 public key from 64 hex characters."""
    try:
        key = bytes.fromhex(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        key = b""
    if len(key) != 32:
        raise KeyFileError(f"{where}: public key must be 64 hex characters")
    return key
