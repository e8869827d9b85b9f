"""Wallet files: issued credentials with their holders' key seeds (docs/FORMATS.md, section 5).

Written by ``python -m engine issue`` for demos, tests and load generation: in real
deployments holder keys never leave the holder's device.  The file is a msgpack
stream: a header map, then one ``[credential, holder_seed]`` array per wallet.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import msgpack

from engine.errors import EsscError
from engine.formats.files import atomic_writer

WALLET_FORMAT = "essc-wallets"
WALLET_VERSION = 1


class WalletFileError(EsscError):
    """A wallet file that cannot be read; the message names the file and the record."""


@dataclasses.dataclass(frozen=True)
class Wallet:
    credential: bytes  # encoded credential (docs/FORMATS.md, section 3)
    holder_seed: bytes  # 32-byte Ed25519 seed of the holder key


def write(
    path: str | os.PathLike[str], header: dict[str, Any], chunks: Iterable[list[Wallet]]
) -> int:
    """Write atomically (0600: the file holds private keys); returns the wallet count.

    ``header`` must carry "count"; the number of wallets written must match it.
    """
    expected = header["count"]
    packer = msgpack.Packer(use_bin_type=True)
    written = 0
    with atomic_writer(path, mode=0o600) as f:
        f.write(packer.pack({"format": WALLET_FORMAT, "version": WALLET_VERSION, **header}))
        for chunk in chunks:
            f.write(b"".join(packer.pack([w.credential, w.holder_seed]) for w in chunk))
            written += len(chunk)
        if written != expected:
            raise ValueError(f"header says {expected} wallets, {written} were written")
    return written


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    with _open(path) as f:
        return _header(msgpack.Unpacker(f, raw=False), path)


def read(path: str | os.PathLike[str]) -> Iterator[Wallet]:
    """Every wallet in the file, in order; WalletFileError on anything unexpected."""
    with _open(path) as f:
        unpacker = msgpack.Unpacker(f, raw=False, max_buffer_size=1 << 20)
        header = _header(unpacker, path)
        count = 0
        try:
            for record in unpacker:
                if (
                    type(record) is not list
                    or len(record) != 2
                    or type(record[0]) is not bytes
                    or type(record[1]) is not bytes
                    or len(record[1]) != 32
                ):
                    raise WalletFileError(f"{path}: record {count}: not [credential, 32-byte seed]")
                yield Wallet(record[0], record[1])
                count += 1
        except (ValueError, msgpack.UnpackException):
            raise WalletFileError(f"{path}: record {count}: not valid msgpack") from None
        if count != header["count"]:
            raise WalletFileError(f"{path}: header says {header['count']} wallets, found {count}")


def _open(path: str | os.PathLike[str]) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as e:
        raise WalletFileError(f"{path}: cannot read: {e.strerror}") from None


def _header(unpacker: msgpack.Unpacker, path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        header = next(unpacker)
    except (StopIteration, ValueError, msgpack.UnpackException):
        raise WalletFileError(f"{path}: empty or not a wallet file") from None
    if not isinstance(header, dict) or header.get("format") != WALLET_FORMAT:
        raise WalletFileError(f"{path}: not a wallet file (no {WALLET_FORMAT!r} header)")
    if header.get("version") != WALLET_VERSION:
        raise WalletFileError(f"{path}: unsupported wallet file version {header.get('version')}")
    if type(header.get("count")) is not int:
        raise WalletFileError(f"{path}: header has no wallet count")
    return header
