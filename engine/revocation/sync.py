"""The node's side of distribution: pull the publication point's files, check, install.

A node polls ``index.essc`` at ``source_url`` (engine.revocation.publication) and keeps
``directory``, which only the engine writes, holding the files of the newest verified
index and that index, byte for byte as received.  The store loads what ``local_files``
names there.

- Polls are conditional (If-None-Match): an unchanged index costs a 304.  nginx's ETag
  is the mtime in whole seconds and the size, so an index replaced within the second it
  was written, at the same size, would keep its ETag; an ETag is therefore kept only
  when the response's Date is past its Last-Modified (the next poll after a fresh
  publication fetches the index in full, and sees such a replacement).
- Only what the installed index lacks is fetched (same name and SHA-256), so a delta
  costs the index and that delta.
- Install order: every file is downloaded and checked before any is renamed into
  place (size and SHA-256 against the index, then ``map_file``'s checks and the
  manifest's signature, digest, kind and sequence), then the index is replaced
  atomically, last: a reader that finds the new index finds all its files.  Files the
  new index no longer names are removed only after that.  Any failure before the
  index is replaced leaves the installed set as it was.
- Downloads go to ``.partial/<sha256 of the entry>``: a partial can only ever be resumed
  as the file it was started for.  An interrupted transfer keeps it; the next poll asks
  for the rest with ``Range`` (hashing the prefix held), starts over on a 200, and
  discards it on a 416 or when the whole does not match the index.
- Rollback: signed data stays validly signed forever, so a replayed older index would
  verify.  An index below the installed one (sequence or snapshot sequence, or the same
  sequence with other bytes) or below the rollback state file is refused.
- Each poll is one attempt (no HTTP retries): the next poll is the retry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import hashlib
import os
import pathlib
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import urllib3

from engine.errors import EsscError
from engine.formats.files import write_atomically
from engine.formats.trustlist import PublisherKey
from engine.revocation.accepted import AcceptedState, AcceptedStateError
from engine.revocation.format import RevocationFileError, map_file
from engine.revocation.manifest import ManifestError
from engine.revocation.publication import (
    INDEX_FILE,
    MAX_INDEX_BYTES,
    Entry,
    Index,
    PublicationError,
)

ETAG_FILE = ".index-etag"
PARTIAL_DIR = ".partial"
CHUNK = 1 << 20  # local reads
# urllib3's stream(n) returns only once n bytes have come (or the body ends), and an
# interrupted read loses what it held: small reads keep the most of a cut-off transfer.
NET_CHUNK = 64 << 10
KINDS = ("unreachable", "http", "index", "expired", "rollback", "digest", "file", "partial", "disk")

Publishers = Callable[[], Mapping[str, PublisherKey]]


class SyncError(EsscError):
    """A poll that failed; ``kind`` is one of KINDS.  The installed files are untouched."""

    def __init__(self, kind: str, message: str):
        assert kind in KINDS, kind
        super().__init__(message)
        self.kind = kind


@dataclasses.dataclass
class SyncOutcome:
    changed: bool  # a new index (and its files) was installed
    sequence: int
    snapshot_sequence: int
    fetched: list[str]  # revocation files downloaded (the index not included)
    bytes: int  # bytes of those files received by this call (the index not included)
    started_at: float = 0.0  # when this poll began (clock time): publish-to-service timings


def local_files(
    directory: str | os.PathLike[str], publishers: Mapping[str, PublisherKey]
) -> tuple[str, list[str], Index] | None:
    """(snapshot path, delta paths in order, index) of the installed index, verified;
    None when nothing is installed yet.  PublicationError where it does not verify."""
    d = pathlib.Path(directory)
    try:
        data = (d / INDEX_FILE).read_bytes()
    except FileNotFoundError:
        return None
    try:
        index = Index.decode(data, publishers)
    except PublicationError as e:
        raise PublicationError(f"{d / INDEX_FILE}: {e}") from None
    return str(d / index.snapshot.name), [str(d / e.name) for e in index.deltas], index


class RevocationSync:
    """Keeps ``directory`` in step with the publication point at ``source_url``."""

    def __init__(
        self,
        source_url: str,
        directory: str | os.PathLike[str],
        *,
        publishers: Publishers,
        accepted: AcceptedState | None = None,
        ca_file: str | None = None,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ):
        self.source_url = source_url
        self.index_url = urllib.parse.urljoin(source_url.rstrip("/") + "/", INDEX_FILE)
        self.directory = pathlib.Path(directory)
        self.partial_dir = self.directory / PARTIAL_DIR
        self.publishers = publishers
        self.accepted = accepted
        self.clock = clock
        self.timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self.http = urllib3.PoolManager(
            retries=False, timeout=self.timeout, cert_reqs="CERT_REQUIRED", ca_certs=ca_file
        )
        self.last_success_at: float | None = None
        self.last_attempt_at: float | None = None
        self.bytes_total = 0
        self.failures: dict[str, int] = {}
        self.last_error: str | None = None
        self.syncs_total = 0  # polls that ended well, changed or not
        self.requests_total = 0  # GETs the source answered
        self.sequence: int | None = None  # of the installed index
        self.snapshot_sequence: int | None = None
        with contextlib.suppress(OSError, PublicationError):  # for status() before a poll
            local = Index.decode_unverified((self.directory / INDEX_FILE).read_bytes())
            self.sequence, self.snapshot_sequence = local.sequence, local.snapshot.sequence

    def status(self) -> dict[str, Any]:
        return {
            "source_url": self.source_url,
            "sequence": self.sequence,
            "snapshot_sequence": self.snapshot_sequence,
            "last_success_at": self.last_success_at,
            "last_attempt_at": self.last_attempt_at,
            "bytes_total": self.bytes_total,
            "syncs_total": self.syncs_total,
            "requests_total": self.requests_total,
            "failures": dict(self.failures),
            "last_error": self.last_error,
        }

    def run(
        self,
        stop: threading.Event,
        interval_s: float,
        on_change: Callable[[SyncOutcome], None],
        on_error: Callable[[SyncError], None] | None = None,
        on_poll: Callable[[SyncOutcome], None] | None = None,
    ) -> None:
        """Polls until ``stop`` is set: ``on_poll`` after every poll that ended well,
        ``on_change`` after one that installed new data, ``on_error`` after a failure."""
        while not stop.is_set():
            try:
                outcome = self.sync_once()
            except SyncError as e:
                if on_error is not None:
                    on_error(e)
            else:
                if on_poll is not None:
                    on_poll(outcome)
                if outcome.changed:
                    on_change(outcome)
            stop.wait(interval_s)

    def sync_once(self) -> SyncOutcome:
        self.last_attempt_at = self.clock()
        try:
            outcome = self._sync()
        except SyncError as e:
            self.failures[e.kind] = self.failures.get(e.kind, 0) + 1
            self.last_error = f"{e.kind}: {e}"
            raise
        self.syncs_total += 1
        self.last_success_at = self.clock()
        self.last_error = None
        outcome.started_at = self.last_attempt_at
        return outcome

    # --- one poll -----------------------------------------------------------------------

    def _sync(self) -> SyncOutcome:
        try:
            self.partial_dir.mkdir(parents=True, exist_ok=True)
            local_bytes = _read_or_none(self.directory / INDEX_FILE)
            etag = _read_or_none(self.directory / ETAG_FILE)
        except OSError as e:
            raise SyncError("disk", f"{self.directory}: cannot read: {e}") from None
        # Written by this engine after checking it: no signature needed to trust it as
        # the floor; a local index that does not even decode is as good as none.
        local = None
        with contextlib.suppress(PublicationError):
            local = Index.decode_unverified(local_bytes) if local_bytes is not None else None
        if local is not None:
            self.sequence, self.snapshot_sequence = local.sequence, local.snapshot.sequence
        headers = {"If-None-Match": etag.decode()} if local is not None and etag else {}
        status, data, new_etag = self._get_index(headers)
        if status == 304 and local is not None:
            self._check_expiry(local)
            return SyncOutcome(False, local.sequence, local.snapshot.sequence, [], 0)
        if status != 200:
            raise SyncError("http", f"GET {self.index_url}: unexpected status {status}")
        try:
            index = Index.decode(data, self.publishers())
        except PublicationError as e:
            raise SyncError("index", f"{self.index_url}: {e}") from None
        self._check_expiry(index)
        self._check_rollback(index, data, local, local_bytes)
        if data == local_bytes:  # the same index, served afresh
            self._write_etag(new_etag)
            return SyncOutcome(False, index.sequence, index.snapshot.sequence, [], 0)

        held = {(e.name, e.sha256, e.size) for e in (local.entries if local else ())}
        fetched, received, ready = [], 0, []
        for entry in index.entries:
            target = self.directory / entry.name
            if (entry.name, entry.sha256, entry.size) in held and _size(target) == entry.size:
                continue
            path, n = self._download(entry)
            self._check_file(path, entry, index)
            fetched.append(entry.name)
            received += n
            ready.append((path, target))
        try:
            for path, target in ready:
                os.replace(path, target)
            _fsync_dir(self.directory)
            # No ETag of the old index may outlive it: a 304 would hide the new one.
            (self.directory / ETAG_FILE).unlink(missing_ok=True)
            write_atomically(self.directory / INDEX_FILE, data)  # last: the commit point
        except OSError as e:
            raise SyncError("disk", f"{self.directory}: cannot install: {e}") from None
        # Installed: what is left is tidying, and a failure in it must not hide the change
        # (the next successful install tidies again).
        with contextlib.suppress(OSError, SyncError):
            self._write_etag(new_etag)
            self._prune(index, local)
        self.sequence, self.snapshot_sequence = index.sequence, index.snapshot.sequence
        return SyncOutcome(True, index.sequence, index.snapshot.sequence, fetched, received)

    def _check_expiry(self, index: Index) -> None:
        if self.clock() > index.expires_at:
            raise SyncError(
                "expired",
                f"{self.index_url}: index sequence {index.sequence} expired at "
                f"{index.expires_at} (a frozen or stale publication point)",
            )

    def _check_rollback(
        self, index: Index, data: bytes, local: Index | None, local_bytes: bytes | None
    ) -> None:
        why = None
        if local is not None:
            if index.snapshot.sequence < local.snapshot.sequence:
                why = (
                    f"snapshot {index.snapshot.sequence} is older than the installed "
                    f"{local.snapshot.sequence}"
                )
            elif index.sequence < local.sequence:
                why = f"sequence {index.sequence} is older than the installed {local.sequence}"
            elif index.sequence == local.sequence and data != local_bytes:
                why = f"sequence {index.sequence} is installed with other contents"
            mine = {e.sequence: e for e in local.entries}
            for e in index.entries:  # one history: a sequence names one file, forever
                if why is None and mine.get(e.sequence, e) != e:
                    why = f"{e.kind} {e.sequence} is installed with other contents"
        if why is None and self.accepted is not None:
            try:
                accepted = self.accepted.read()
            except AcceptedStateError as e:
                raise SyncError("disk", str(e)) from None
            if accepted is not None:
                why = accepted.refuses(index.snapshot.sequence, index.sequence)
                digest = index.snapshot.manifest_digest.hex()
                same = index.snapshot.sequence == accepted.snapshot_sequence
                if why is None and same and accepted.snapshot_digest not in ("", digest):
                    why = (
                        f"snapshot {accepted.snapshot_sequence} was accepted with another manifest"
                    )
                if why is not None:
                    why += f" ({self.accepted.path})"
        if why is not None:
            raise SyncError("rollback", f"{self.index_url}: refused, {why}")

    # --- HTTP ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _get(self, url: str, headers: dict[str, str]) -> Iterator[urllib3.BaseHTTPResponse]:
        try:
            resp = self.http.request(
                "GET",
                url,
                headers={"Accept-Encoding": "identity", **headers},
                preload_content=False,
            )
        except urllib3.exceptions.HTTPError as e:
            raise SyncError("unreachable", f"GET {url}: {_why(e)}") from None
        self.requests_total += 1  # answered (headers received): status, tests' access logs
        try:
            yield resp
        finally:
            if not resp.closed:  # a body not read to its end: the connection is unusable
                resp.close()
            resp.release_conn()

    def _get_index(self, headers: dict[str, str]) -> tuple[int, bytes, str | None]:
        with self._get(self.index_url, headers) as resp:
            try:
                data = resp.read(MAX_INDEX_BYTES + 1, decode_content=False)
                if len(data) > MAX_INDEX_BYTES:
                    raise SyncError("index", f"{self.index_url}: over {MAX_INDEX_BYTES} bytes")
                resp.drain_conn()
            except urllib3.exceptions.HTTPError as e:
                raise SyncError("unreachable", f"GET {self.index_url}: {_why(e)}") from None
            return resp.status, data, _stable_etag(resp.headers)

    def _download(self, entry: Entry) -> tuple[pathlib.Path, int]:
        """The entry's file, complete and matching its size and SHA-256, in .partial;
        and the bytes received for it."""
        url = urllib.parse.urljoin(self.index_url, entry.name)
        path = self.partial_dir / entry.sha256.hex()
        have = _size(path) or 0
        if have > entry.size:
            path.unlink()
            have = 0
        h, received, resumed = hashlib.sha256(), 0, have
        try:
            if have:  # the held prefix joins the hash whatever the server answers
                with open(path, "rb") as f:
                    while chunk := f.read(CHUNK):
                        h.update(chunk)
            if have < entry.size:
                headers = {"Range": f"bytes={have}-"} if have else {}
                with self._get(url, headers) as resp:
                    if resp.status == 416:
                        path.unlink()
                        raise SyncError(
                            "digest", f"{url}: range from {have} refused (416); partial discarded"
                        )
                    if have and resp.status == 206:
                        start = resp.headers.get("Content-Range", "").removeprefix("bytes ")
                        if start.partition("-")[0] != str(have):
                            raise SyncError(
                                "http", f"{url}: 206 for {have}- with Content-Range {start!r}"
                            )
                    elif resp.status == 200:
                        have, h, resumed = 0, hashlib.sha256(), 0
                    else:
                        raise SyncError("http", f"GET {url}: unexpected status {resp.status}")
                    with open(path, "ab" if have else "wb") as f:
                        try:
                            for chunk in resp.stream(NET_CHUNK, decode_content=False):
                                if have + len(chunk) > entry.size:
                                    break  # longer than the index says: digest below
                                f.write(chunk)
                                h.update(chunk)
                                have += len(chunk)
                                received += len(chunk)
                                self.bytes_total += len(chunk)
                        except urllib3.exceptions.HTTPError as e:
                            raise SyncError(
                                "partial",
                                f"GET {url}: cut off at {have} of {entry.size} bytes "
                                f"({_why(e)}); kept for resuming",
                            ) from None
                        f.flush()
                        os.fsync(f.fileno())
            if (have, h.digest()) != (entry.size, entry.sha256):
                path.unlink()
                raise SyncError(
                    "digest",
                    f"{url}: {have} bytes with SHA-256 {h.hexdigest()}"
                    + (f" (resumed at {resumed})" if resumed else "")
                    + f", the index says {entry.size} bytes {entry.sha256.hex()}; discarded",
                )
        except OSError as e:
            raise SyncError("disk", f"{path}: {e}") from None
        return path, received

    def _check_file(self, path: pathlib.Path, entry: Entry, index: Index) -> None:
        try:
            manifest = map_file(path, kind=entry.kind, name=entry.name).manifest
            if manifest is None:
                raise ManifestError("is not signed")
            manifest.verify(self.publishers())
        except (RevocationFileError, ManifestError) as e:
            path.unlink(missing_ok=True)  # what the index vouches for, yet unusable
            shown = str(e) if isinstance(e, RevocationFileError) else f"{entry.name}: {e}"
            raise SyncError("file", shown) from None
        expected: tuple[object, ...] = (entry.manifest_digest, entry.kind, entry.sequence)
        found: tuple[object, ...] = (manifest.digest, manifest.kind, manifest.sequence)
        if entry.kind == "delta":
            snap = index.snapshot
            expected += (snap.sequence, snap.manifest_digest)
            found += (manifest.base_sequence, manifest.base_digest)
        if found != expected:
            path.unlink(missing_ok=True)
            raise SyncError("file", f"{entry.name}: its manifest differs from the index entry")

    # --- local files --------------------------------------------------------------------

    def _write_etag(self, etag: str | None) -> None:
        try:
            if etag:
                write_atomically(self.directory / ETAG_FILE, etag.encode())
            else:
                (self.directory / ETAG_FILE).unlink(missing_ok=True)
        except OSError as e:
            raise SyncError("disk", f"{self.directory / ETAG_FILE}: {e}") from None

    def _prune(self, index: Index, previous: Index | None) -> None:
        """Files of the previous index (and stray .essc files) the new one does not
        name, and every partial: only what this engine put here (not the state file)."""
        keep = {e.name for e in index.entries} | {INDEX_FILE}
        stale = {e.name for e in previous.entries} if previous else set()
        for p in self.directory.iterdir():
            if p.name not in keep and (p.name in stale or p.suffix == ".essc") and p.is_file():
                p.unlink()
        for p in self.partial_dir.iterdir():
            p.unlink()


def _stable_etag(headers: Mapping[str, str]) -> str | None:
    """The ETag, unless the file changed within the second the response was sent (an
    mtime-based ETag could then stay the same through another change)."""
    etag = headers.get("ETag")
    try:
        modified = email.utils.parsedate_to_datetime(headers["Last-Modified"])
        date = email.utils.parsedate_to_datetime(headers["Date"])
    except (KeyError, TypeError, ValueError):
        return etag
    return etag if date > modified else None


def _why(e: Exception) -> str:
    """urllib3's message, without the repr of the exception it wraps."""
    return str(e.args[0]) if e.args else type(e).__name__


def _read_or_none(path: pathlib.Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _size(path: pathlib.Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
