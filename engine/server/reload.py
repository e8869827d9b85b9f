"""The data in service: the trust list and the revocation data, opened at start and
swapped in while serving (SIGHUP, the file watcher, or data that became unreadable).

Invariants:
- a reload never takes the old data out of service unless the new data loaded in
  full and may replace it: a bad file, an older trust list or an exception in
  reloading leaves what is served as it was, and is logged and counted;
- reloads do not overlap (one lock); the files are read in executor threads, never on
  the event loop;
- data that became unreadable while serving fails closed in the verifier
  (REVOCATION_DATA_STALE) and triggers a reload, but not in a tight loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Callable
from typing import Any

from engine.formats.keys import KeyFileError, parse_public_key
from engine.formats.trustlist import TrustList, TrustListError
from engine.revocation.accepted import AcceptedState
from engine.revocation.format import RevocationFileError
from engine.revocation.publication import INDEX_FILE, PublicationError
from engine.revocation.store import RevocationStore, SignaturePolicy
from engine.revocation.sync import RevocationSync, SyncError, local_files
from engine.server import logs
from engine.server.config import Config, ConfigError
from engine.server.metrics import ServerMetrics
from engine.verifier import Verifier

STATE_FILE_NAME = ".essc-revocation-accepted.json"  # beside the snapshot, by default
FAULT_RELOAD_INTERVAL_S = 5.0  # unreadable revocation data: reload attempts at most this often

_log = logs.event


def open_trust(cfg: Config) -> tuple[bytes, TrustList]:
    """The pinned root key and the trust list it signed, as configured."""
    try:
        root_public_key = parse_public_key(cfg.trust.root_public_key, "trust.root_public_key")
    except KeyFileError as e:
        raise ConfigError(str(e)) from None
    return root_public_key, TrustList.load(cfg.trust.trust_list, root_public_key)


def signature_policy(cfg: Config, trust: TrustList) -> SignaturePolicy:
    """Whose signatures the revocation data must carry: the trust list's publisher keys.

    With signatures required, a trust list naming none (every version 1 list) cannot be
    served with revocation data: ConfigError, saying how to migrate."""
    r = cfg.revocation
    if r.require_signature and not trust.publishers:
        raise ConfigError(
            f"the trust list (version {trust.version}, sequence {trust.sequence}) names no "
            "revocation publisher key, so no revocation data can be checked; serve a trust "
            "list that certifies one, or set revocation.require_signature = false (migration)"
        )
    return SignaturePolicy(trust.publishers, r.require_signature)


def state_file(cfg: Config) -> str:
    """The rollback state file (revocation.state_file, or its default)."""
    r = cfg.revocation
    if r.state_file:
        return r.state_file
    if r.source_url:
        return os.path.join(r.sync_dir, "accepted.json")
    return os.path.join(os.path.dirname(os.path.abspath(r.snapshot)), STATE_FILE_NAME)


def new_sync(cfg: Config, publishers: Callable[[], Any]) -> RevocationSync:
    r = cfg.revocation
    return RevocationSync(
        r.source_url,
        r.sync_dir,
        publishers=publishers,
        accepted=AcceptedState(state_file(cfg)),
        ca_file=r.source_ca or None,
        timeout_s=r.source_timeout_s,
    )


def revocation_files(cfg: Config, trust: TrustList) -> tuple[str, list[str]]:
    """(snapshot, deltas) to load now: as configured, or as the synced index names them."""
    r = cfg.revocation
    if not r.source_url:
        return r.snapshot, list(r.deltas)
    try:
        local = local_files(r.sync_dir, trust.publishers)
    except (PublicationError, OSError) as e:
        raise RevocationFileError(f"{r.sync_dir}: the synced index is unusable: {e}") from None
    if local is None:
        raise RevocationFileError(f"{r.sync_dir}: nothing synced from {r.source_url} yet")
    snapshot, deltas, _ = local
    return snapshot, list(deltas)


def open_revocation(cfg: Config, trust: TrustList) -> RevocationStore | None:
    """The revocation store the configuration names, or None when none is configured.

    With a source_url and nothing synced yet, the first sync runs here (start-up
    waits for it; a source that cannot be reached then is a ConfigError)."""
    r = cfg.revocation
    if not r.snapshot and not r.source_url:
        if r.deltas:
            raise ConfigError("revocation.deltas needs revocation.snapshot")
        return None
    policy = signature_policy(cfg, trust)
    try:
        if r.source_url and local_files(r.sync_dir, trust.publishers) is None:
            new_sync(cfg, lambda: trust.publishers).sync_once()
        snapshot, deltas = revocation_files(cfg, trust)
        store = RevocationStore(
            snapshot,
            deltas,
            private_dir=r.private_dir or None,
            signatures=policy,
            accepted=AcceptedState(state_file(cfg)),
            allow_rollback=r.allow_rollback,
        )
    except (RevocationFileError, PublicationError, SyncError) as e:
        raise ConfigError(f"revocation: {e}") from None
    _log_unsigned(store, "start")
    return store


def _log_unsigned(store: RevocationStore, why: str) -> None:
    if store.unsigned:
        _log(
            logging.WARNING,
            "revocation_unsigned",
            files=list(store.unsigned),
            why=why,
            note="loaded without a signature: revocation.require_signature is off",
        )


class Reloader:
    """Reloads the verifier's trust list and revocation store in place.

    ``reloaded`` is called after every reload that ran to its end, loaded or not (the
    server refreshes its gauges then).
    """

    def __init__(
        self,
        verifier: Verifier,
        cfg: Config,
        metrics: ServerMetrics,
        root_public_key: bytes,
        *,
        reloaded: Callable[[], None],
    ):
        self.verifier = verifier
        self.cfg = cfg
        self.metrics = metrics
        self.root_public_key = root_public_key
        self._reloaded = reloaded
        self._lock = asyncio.Lock()
        self._watching: asyncio.Task[Any] | None = None
        self._pending: set[asyncio.Task[Any]] = set()  # the loop keeps only weak references
        self._fault_log = logs.RateLimited()
        self._fault_reload_at = -math.inf  # when unreadable data last triggered a reload

    def start(self) -> None:
        """On the loop: starts polling the files when ``reload.watch_interval_s`` is set."""
        if self.cfg.reload.watch_interval_s > 0:
            # The first stamp is taken now, so a change right after start is not missed.
            self._watching = asyncio.get_running_loop().create_task(
                self._watch(self._file_stamps())
            )

    def stop(self) -> None:
        if self._watching is not None:
            self._watching.cancel()

    def reload_soon(self, why: str) -> None:
        """``reload`` in a task of its own (signal handlers, the readability check)."""
        task = asyncio.get_running_loop().create_task(self.reload(why))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def reload(self, why: str = "signal") -> bool:
        """Loads the trust list and revocation data again; a bad file leaves the old in service.

        Returns True when everything that was tried loaded (or was unchanged).
        """
        async with self._lock:
            try:
                ok = await self._reload_trust(why)
                ok = await self._reload_revocation(why) and ok
            except Exception:  # a bug in reloading must not take the server down
                logging.getLogger(logs.LOGGER).exception(
                    "reload_failed", extra={"fields": {"why": why}}
                )
                return False
            self._reloaded()
            return ok

    def check_revocation_readable(self) -> None:
        """Data in service that became unreadable fails closed (the verifier answers
        REVOCATION_DATA_STALE); a reload from the configured files is tried at once."""
        store = self.verifier.revocation
        if store is None or not getattr(store, "faulted", False) or self._lock.locked():
            return
        now = asyncio.get_running_loop().time()
        if now - self._fault_reload_at < FAULT_RELOAD_INTERVAL_S:
            return  # a reload that failed is not retried in a tight loop
        self._fault_reload_at = now
        self._fault_log(
            logging.ERROR,
            "revocation_unreadable",
            sequence=store.sequence,
            action="failing closed; reloading",
        )
        self.reload_soon("revocation data unreadable")

    def reload_outcome(self, what: str, outcome: str, why: str, **fields: Any) -> None:
        """One reload result: counted in the metrics and logged as one event."""
        self.metrics.reloads.labels(what, outcome).inc()
        event, level = {
            "ok": ("reloaded", logging.INFO),
            "failed": ("reload_failed", logging.ERROR),
            "rejected": ("reload_rejected", logging.ERROR),
        }[outcome]
        _log(level, event, what=what, why=why, **fields)

    async def _reload_trust(self, why: str) -> bool:
        path = self.cfg.trust.trust_list
        current = self.verifier.trust_list
        loop = asyncio.get_running_loop()
        try:
            new = await loop.run_in_executor(None, TrustList.load, path, self.root_public_key)
        except TrustListError as e:
            self.reload_outcome(
                "trust_list", "failed", why, error=str(e), in_service=current.sequence
            )
            return False
        if not new.may_replace(current):
            self.reload_outcome(
                "trust_list",
                "rejected",
                why,
                error="sequence older than the list in service, or same sequence with other "
                "content",
                offered=new.sequence,
                in_service=current.sequence,
            )
            return False
        if new.sequence != current.sequence:
            self.verifier.trust_list = new
            self.reload_outcome(
                "trust_list", "ok", why, sequence=new.sequence, previous=current.sequence
            )
        return True

    async def _reload_revocation(self, why: str) -> bool:
        store = self.verifier.revocation
        if store is None:
            return True
        before, faulted = store.sequence, getattr(store, "faulted", False)
        reload: Callable[..., object] | None = getattr(store, "reload", None)
        if reload is None:  # an in-memory source (tests, demos) has no files to read
            self.reload_outcome(
                "revocation", "failed", why, error="this source cannot reload", in_service=before
            )
            return False
        trust = self.verifier.trust_list
        try:
            if isinstance(store, RevocationStore):
                # The publisher keys of the trust list in service now (it may have just
                # changed), and the files the synced index names now.
                try:
                    policy = signature_policy(self.cfg, trust)
                except ConfigError:  # a list naming no publisher key: nothing verifies
                    policy = SignaturePolicy({}, self.cfg.revocation.require_signature)
                distrusted = store.recheck(policy)
                if distrusted is not None:
                    _log(logging.ERROR, "revocation_distrusted", error=distrusted, why=why)
                snapshot, deltas = revocation_files(self.cfg, trust)
                await asyncio.get_running_loop().run_in_executor(None, reload, snapshot, deltas)
                _log_unsigned(store, why)
            else:
                await asyncio.get_running_loop().run_in_executor(None, reload)
        except Exception as e:  # any failure keeps the old data in service
            self.reload_outcome("revocation", "failed", why, error=str(e), in_service=before)
            return False
        if store.sequence != before or faulted:
            self.reload_outcome("revocation", "ok", why, sequence=store.sequence, previous=before)
        return True

    def _file_stamps(self) -> list[tuple[int, int, int] | None]:
        r = self.cfg.revocation
        paths = [self.cfg.trust.trust_list, r.snapshot, *r.deltas]
        if r.source_url:  # the fetcher replaces the synced index last
            paths.append(os.path.join(r.sync_dir, INDEX_FILE))
        out: list[tuple[int, int, int] | None] = []
        for p in paths:
            if p:
                try:
                    st = os.stat(p)
                    out.append((st.st_ino, st.st_mtime_ns, st.st_size))
                except OSError:
                    out.append(None)
        return out

    async def _watch(self, last: list[tuple[int, int, int] | None]) -> None:
        """Polls the data files and reloads when one changes (replaced or rewritten)."""
        while True:
            await asyncio.sleep(self.cfg.reload.watch_interval_s)
            now = self._file_stamps()
            if now != last:
                last = now
                await self.reload("file changed")
