"""The highest revocation data a node has accepted, kept on disk across restarts.

Without it, a restart would forget what was served, and anyone able to put an older
signed snapshot where the node reads one (a stale mirror, a replayed index) could
reinstate cards revoked since: signed data stays validly signed forever.  So the
engine records the snapshot sequence and the newest sequence (snapshot or delta) it
has put in service, and refuses anything older, after a restart too (X.509 CRL
numbers and TUF's version checks do the same).  An operator rolls back deliberately
with ``python -m engine serve --allow-revocation-rollback``.

The file is a small JSON document (docs/FORMATS.md, section 8.9), replaced atomically;
several processes of one node may share it, each writing what it accepted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from engine.errors import EsscError
from engine.formats.files import write_atomically

KIND = "essc-revocation-accepted"


class AcceptedStateError(EsscError):
    """The state file cannot be read or written; the message names it."""


@dataclasses.dataclass(frozen=True)
class Accepted:
    snapshot_sequence: int
    sequence: int  # the newest applied: the last delta's, or the snapshot's
    snapshot_digest: str = ""  # hex SHA-256 of the snapshot's manifest (signed data)

    def refuses(self, snapshot_sequence: int, sequence: int) -> str | None:
        """Why data with these sequences is older than this, or None."""
        if snapshot_sequence < self.snapshot_sequence:
            return (
                f"snapshot {snapshot_sequence} is older than snapshot {self.snapshot_sequence}, "
                "already accepted"
            )
        if sequence < self.sequence:
            return f"sequence {sequence} is older than sequence {self.sequence}, already accepted"
        return None


class AcceptedState:
    """The state file at ``path``: ``read()`` what was accepted, ``record()`` more."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)

    def read(self) -> Accepted | None:
        """What the file records; None when there is no file yet."""
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read(65536))
        except FileNotFoundError:
            return None
        except OSError as e:
            raise AcceptedStateError(f"{self.path}: cannot read: {e.strerror}") from None
        except ValueError:
            raise AcceptedStateError(f"{self.path}: not JSON; refusing to guess") from None
        try:
            if doc["kind"] != KIND:
                raise ValueError
            accepted = Accepted(
                int(doc["snapshot_sequence"]), int(doc["sequence"]), str(doc["snapshot_digest"])
            )
        except (KeyError, TypeError, ValueError):
            raise AcceptedStateError(
                f"{self.path}: not a revocation state file (kind {KIND!r})"
            ) from None
        return accepted

    def record(self, accepted: Accepted) -> None:
        """Replaces the file (atomically, fsynced) with ``accepted``."""
        doc = {"kind": KIND, **dataclasses.asdict(accepted), "recorded_at": int(time.time())}
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            write_atomically(self.path, (json.dumps(doc, indent=1) + "\n").encode())
        except OSError as e:
            raise AcceptedStateError(f"{self.path}: cannot write: {e.strerror}") from None
