"""The revocation store: a memory-mapped snapshot plus deltas, looked up in batches.

    store = RevocationStore("var/revocation.snap", ["var/revocation-0001.delta"])
    revoked = store.contains("card", [b"G12345678", ...])   # numpy bool array
    store.reload()                                         # picks up replaced files

The snapshot's split-block Bloom filter answers most look-ups with one cache line;
a Bloom hit is confirmed in the exact tier (sorted 128-bit fingerprints), so
"revoked" is exact.  Deltas add ids (newly revoked) and remove them (reinstated);
they are composed into one add set and one remove set when loaded.  All look-ups of
a batch run in C without the GIL.

The files are never mapped where they are configured: each is copied once into a
private directory that only the engine writes (engine.revocation.private), and the
copy is checksummed and mapped, so a file overwritten or truncated in place changes
nothing in service.  Should mapped data ever become unreadable anyway, look-ups raise
``_core.RevocationDataUnreadable`` (the verifier fails closed) and ``faulted`` is set
until a reload.

Authenticity (docs/FORMATS.md, 8.7-8.9): given a ``SignaturePolicy`` (the trust list's
revocation publisher keys), every signed file's manifest is verified and checked
against its sections before the file is used, a delta must name its snapshot's
manifest digest, and unsigned files are refused unless the policy allows them.  Given
an ``AcceptedState``, data older than what this node accepted before (a restart
included) is refused, and what is put in service is recorded.

``reload()`` builds the new state completely (opened, checksummed, composed) before
swapping one reference; look-ups already running keep the state they started with,
and its mappings are released only when the last of them finishes.  A reload that
fails leaves the old data in service.  Implements engine.revocation.source's
RevocationSource, so ``Verifier(..., revocation=store)`` uses it as is.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from engine import _core
from engine.formats.trustlist import PublisherKey
from engine.revocation import private as private
from engine.revocation.accepted import Accepted, AcceptedState, AcceptedStateError
from engine.revocation.format import (
    KIND_CODES,
    Header,
    MappedFile,
    RevocationFileError,
    bloom_blocks_for,
    map_file,
)
from engine.revocation.manifest import Manifest, ManifestError
from engine.revocation.source import KINDS

__all__ = ["RevocationFileError", "RevocationStore", "SignaturePolicy"]

ADD_SET_FPR = 0.001  # the in-memory Bloom filter over the delta add set


@dataclasses.dataclass(frozen=True)
class SignaturePolicy:
    """Whose signatures revocation data must carry: the trust list's publisher keys."""

    publishers: Mapping[str, PublisherKey]
    require_signature: bool = True  # False: unsigned files load too (tests, migration)


@dataclasses.dataclass(frozen=True)
class _State:
    """One consistent, immutable view: a snapshot, its deltas and the look-up table."""

    table: _core.RevocationTable
    snapshot: MappedFile
    deltas: tuple[MappedFile, ...]
    sequence: int
    created_at: float
    added: int  # ids in the composed add and remove sets
    removed: int
    copies: frozenset[str]  # the private copies it maps
    expires_at: float | None  # the latest signed expiry; None: no signed file
    unsigned: tuple[str, ...]  # files loaded without a signature (the policy allowed it)

    @property
    def manifest(self) -> Manifest | None:
        return self.snapshot.manifest

    @property
    def accepted(self) -> Accepted:
        m = self.snapshot.manifest
        return Accepted(
            self.snapshot.header.sequence, self.sequence, "" if m is None else m.digest.hex()
        )


class RevocationStore:
    """Revocation data from a snapshot file and delta files, reloadable while in use."""

    def __init__(
        self,
        snapshot: str | os.PathLike[str],
        deltas: Sequence[str | os.PathLike[str]] = (),
        *,
        threads: int = 1,
        clock: Callable[[], float] = time.time,
        private_dir: str | os.PathLike[str] | None = None,
        signatures: SignaturePolicy | None = None,
        accepted: AcceptedState | None = None,
        allow_rollback: bool = False,
    ):
        """``private_dir``: where the private copies go (default: private.default_directory).

        ``signatures``: None checks no signature (tools and tests; the server always
        passes its policy).  ``accepted``: the rollback state file; ``allow_rollback``
        lets this first load go below what it records (and records the new data)."""
        self.threads = threads
        self.signatures = signatures
        self.accepted = accepted
        self.distrusted: str | None = None  # see recheck
        self.clock = clock
        self._lock = threading.Lock()  # one reload at a time; look-ups never wait
        self._snapshot_path = os.fspath(snapshot)
        self._delta_paths = tuple(os.fspath(d) for d in deltas)
        self.private_dir = private.ensure_directory(
            os.fspath(private_dir) if private_dir else private.default_directory()
        )
        state = _load(self._snapshot_path, self._delta_paths, self.private_dir, signatures)
        self._accept(state, None, allow_rollback)
        self._state = state
        private.prune(self.private_dir, set(self._state.copies))

    # --- the RevocationSource protocol -----------------------------------------------

    @property
    def sequence(self) -> int:
        """The newest sequence applied: the last delta's, or the snapshot's."""
        return self._state.sequence

    @property
    def created_at(self) -> float:
        """Unix time of the newest data applied (snapshot or delta)."""
        return self._state.created_at

    def contains(self, kind: str, ids: Sequence[bytes] | np.ndarray) -> np.ndarray:
        """Bool array: ids[i] of this kind is revoked.

        ``ids`` is a sequence of bytes, or (no copy) a C-contiguous numpy array of
        fixed-size ids: dtype S9 / S16, or 2-D uint8 with 9 or 16 columns.  An id of
        the wrong length for its kind is never revoked.
        """
        return self._state.table.contains(_code(kind), ids, self.threads)

    # --- the rest ---------------------------------------------------------------------

    @property
    def expires_at(self) -> float | None:
        """Unix time after which the data is stale whatever its age (signed data only)."""
        return self._state.expires_at

    @property
    def manifest(self) -> Manifest | None:
        """The snapshot's signed manifest (None: unsigned)."""
        return self._state.manifest

    @property
    def unsigned(self) -> tuple[str, ...]:
        """Files in service that carry no signature (allowed by the policy)."""
        return self._state.unsigned

    @property
    def age(self) -> float:
        """Seconds since the newest data applied was created."""
        return self.clock() - self.created_at

    @property
    def faulted(self) -> bool:
        """The data in service became unreadable (look-ups fail closed until a reload)."""
        return self._state.table.faulted

    @property
    def snapshot_sequence(self) -> int:
        return self._state.snapshot.header.sequence

    @property
    def snapshot_file(self) -> MappedFile:
        """The mapped snapshot in service (header and read-only section arrays)."""
        return self._state.snapshot

    @property
    def paths(self) -> tuple[str, tuple[str, ...]]:
        return self._snapshot_path, self._delta_paths

    def is_revoked(self, kind: str, ident: bytes) -> bool:
        return bool(self.contains(kind, [ident])[0])

    def bloom_contains(self, kind: str, ids: Sequence[bytes] | np.ndarray) -> np.ndarray:
        """The snapshot's Bloom filter alone (false positives included): tests, benchmarks."""
        return self._state.table.contains(_code(kind), ids, self.threads, bloom_only=True)

    def reload(
        self,
        snapshot: str | os.PathLike[str] | None = None,
        deltas: Sequence[str | os.PathLike[str]] | None = None,
        *,
        allow_older: bool = False,
    ) -> None:
        """Swaps in the data now in the files (or in new ones), all or nothing.

        Raises RevocationFileError, with the old data still in service, if a file is
        unusable or if the new data is older than what is served (unless
        ``allow_older``: a deliberate roll-back).
        """
        with self._lock:
            snap = self._snapshot_path if snapshot is None else os.fspath(snapshot)
            paths = self._delta_paths if deltas is None else tuple(os.fspath(d) for d in deltas)
            state = _load(snap, paths, self.private_dir, self.signatures)
            current = self._state
            # Unreadable data is replaced by whatever validates, older or not.
            if state.sequence < current.sequence and not allow_older and not self.faulted:
                raise RevocationFileError(
                    f"{snap}: sequence {state.sequence} is older than the data in service "
                    f"({current.sequence}); not replacing it"
                )
            self._accept(state, current, allow_older)
            self._state = state  # one reference swap: readers see old or new, whole
            self.distrusted = None  # loaded under the policy in force
            self._snapshot_path, self._delta_paths = snap, paths
            private.prune(self.private_dir, set(state.copies))

    def recheck(self, signatures: SignaturePolicy) -> str | None:
        """Takes a new policy (a new trust list) and checks the data in service under it.

        Data the new policy refuses (its publisher key revoked or gone, unsigned data
        no longer allowed) stops answering: ``distrusted`` says why, and the verifier
        fails closed (REVOCATION_DATA_STALE) until a reload brings data the policy
        accepts.  Returns ``distrusted``."""
        self.signatures = signatures
        s = self._state
        try:
            for f in (s.snapshot, *s.deltas):
                _authenticate(f, signatures)
        except RevocationFileError as e:
            self.distrusted = f"revocation data no longer trusted: {e}"
        else:
            self.distrusted = None
        return self.distrusted

    def _accept(self, state: _State, current: _State | None, allow_older: bool) -> None:
        """Refuses data older than the state file records (unless ``allow_older``) and
        records the new data; a record that cannot be written refuses the data too (a
        restart could roll back otherwise)."""
        if self.accepted is None:
            return
        new = state.accepted
        try:
            before = self.accepted.read()
            if before is not None and not allow_older:
                why = before.refuses(new.snapshot_sequence, new.sequence)
                if why is not None:
                    raise RevocationFileError(
                        f"{state.snapshot.path}: {why} (rollback state {self.accepted.path}; "
                        "--allow-revocation-rollback overrides)"
                    )
            if before != new:
                self.accepted.record(new)
        except AcceptedStateError as e:
            raise RevocationFileError(str(e)) from None

    def describe(self) -> dict[str, Any]:
        s = self._state
        h = s.snapshot.header
        return {
            "snapshot": s.snapshot.path,
            "deltas": [d.path for d in s.deltas],
            "sequence": s.sequence,
            "snapshot_sequence": h.sequence,
            "created_at": s.created_at,
            "cards": h.cards,
            "credentials": h.credentials,
            "delta_added": s.added,
            "delta_removed": s.removed,
            "expires_at": s.expires_at,
            "manifest": None if s.manifest is None else s.manifest.describe(),
            "delta_manifests": [
                None if d.manifest is None else d.manifest.describe() for d in s.deltas
            ],
            "unsigned": list(s.unsigned),
        }


def _code(kind: str) -> int:
    try:
        return KIND_CODES[kind]
    except KeyError:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}") from None


def _map_private(path: str, kind: str, directory: str) -> tuple[MappedFile, str]:
    """The file at ``path``, mapped from its private copy (checked as a whole first)."""
    copy, reused = private.private_copy(path, directory)
    try:
        return map_file(copy, kind=kind, name=path), copy
    except RevocationFileError:
        private.discard(copy)
        if not reused:
            raise
    # A copy left by an earlier load that no longer validates: copy afresh, once.
    copy, _ = private.private_copy(path, directory)
    return map_file(copy, kind=kind, name=path), copy


def _authenticate(f: MappedFile, policy: SignaturePolicy | None) -> bool:
    """Checks ``f``'s signature under ``policy``; False: unsigned, and allowed."""
    if f.manifest is None:
        if policy is not None and policy.require_signature:
            raise RevocationFileError(
                f"{f.path}: not signed (format version 1), and revocation.require_signature is on"
            )
        return False
    if policy is not None:
        try:
            f.manifest.verify(policy.publishers)
        except ManifestError as e:
            raise RevocationFileError(f"{f.path}: {e}") from None
    return True


def _load(
    snapshot_path: str,
    delta_paths: tuple[str, ...],
    directory: str,
    policy: SignaturePolicy | None = None,
) -> _State:
    snap, snap_copy = _map_private(snapshot_path, "snapshot", directory)
    mapped = [_map_private(p, "delta", directory) for p in delta_paths]
    deltas = tuple(m for m, _ in mapped)
    unsigned = [f.path for f in (snap, *deltas) if not _authenticate(f, policy)]
    h = snap.header
    seen: dict[int, str] = {}
    for d in deltas:
        dh = d.header
        if dh.base_sequence != h.sequence:
            raise RevocationFileError(
                f"{d.path}: applies to snapshot {dh.base_sequence}, but {snap.path} is "
                f"snapshot {h.sequence}"
            )
        if (dh.hash_id, dh.seed) != (h.hash_id, h.seed):
            raise RevocationFileError(
                f"{d.path}: hashed with another seed than {snap.path} (not built on it)"
            )
        if d.manifest is not None and (
            snap.manifest is None or d.manifest.base_digest != snap.manifest.digest
        ):
            raise RevocationFileError(
                f"{d.path}: its signed manifest names another snapshot than {snap.path} "
                "(base digest differs)"
            )
        if dh.sequence in seen:
            raise RevocationFileError(
                f"{d.path}: sequence {dh.sequence} repeats {seen[dh.sequence]}"
            )
        seen[dh.sequence] = d.path
    ordered = sorted(deltas, key=lambda d: d.header.sequence)
    add, remove = _compose(ordered)
    add_bits = _core.fpset_bits_for(len(add))
    remove_bits = _core.fpset_bits_for(len(remove))
    add_bloom = np.zeros(bloom_blocks_for(len(add), ADD_SET_FPR) * 8, dtype=np.uint32)
    _core.bloom_insert(add_bloom, add[:, 0])
    a = snap.arrays
    try:
        table = _core.RevocationTable(
            h.seed,
            a["bloom"],
            a["fps"],
            a["index"],
            h.bucket_bits,
            add_bloom,
            add,
            _core.fpset_index(add, add_bits),
            add_bits,
            remove,
            _core.fpset_index(remove, remove_bits),
            remove_bits,
        )
    except ValueError as e:
        raise RevocationFileError(f"{snap.path}: {e}") from None
    headers: list[Header] = [h, *(d.header for d in ordered)]
    return _State(
        table=table,
        snapshot=snap,
        deltas=tuple(ordered),
        sequence=max(x.sequence for x in headers),
        created_at=float(max(x.created_at for x in headers)),
        added=len(add),
        removed=len(remove),
        copies=frozenset([snap_copy, *(c for _, c in mapped)]),
        expires_at=max(
            (float(f.manifest.expires_at) for f in (snap, *ordered) if f.manifest is not None),
            default=None,
        ),
        unsigned=tuple(unsigned),
    )


def _compose(deltas: list[MappedFile]) -> tuple[np.ndarray, np.ndarray]:
    """One (add, remove) pair, sorted and disjoint, equivalent to the deltas in order."""
    empty = np.zeros((0, 2), dtype=np.uint64)
    if not deltas:
        return empty, empty
    if len(deltas) == 1:  # a delta's own sets are already sorted and disjoint
        return deltas[0].arrays["add"], deltas[0].arrays["remove"]
    add: set[tuple[int, int]] = set()
    remove: set[tuple[int, int]] = set()
    for d in deltas:
        for fp in map(tuple, d.arrays["add"].tolist()):
            add.add(fp)
            remove.discard(fp)
        for fp in map(tuple, d.arrays["remove"].tolist()):
            remove.add(fp)
            add.discard(fp)

    def sorted_array(fps: set[Any]) -> np.ndarray:
        arr = np.array(sorted(fps), dtype=np.uint64).reshape(-1, 2)
        return np.ascontiguousarray(arr)

    return sorted_array(add), sorted_array(remove)
