"""The node's fetcher: a thread that polls the publication point and reloads on change.

One per node (``revocation.source_url``): in the serving process, or in worker 0 under
a supervisor.  The polling, downloading and checking are engine.revocation.sync's; this
module runs it beside the event loop and reports what it did:

- every poll is counted (``essc_revocation_sync_*``) and a failure logged, rate
  limited; the data in service is never touched by a failed poll, and the node keeps
  serving it down to its expiry or ``revocation.max_age_s`` (then fails closed);
- a poll that installed new files reloads: in a single process through the loop
  (``Reloader.reload_soon``), under a supervisor by a SIGHUP to the supervisor, which
  forwards it to every worker, this one included.  The synced index is replaced last,
  so a worker reloading at any moment sees a complete set of files.

The HTTP requests run on this thread with blocking sockets; the event loop never waits
on the source.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from engine.formats.trustlist import TrustList
from engine.revocation.sync import RevocationSync, SyncError, SyncOutcome
from engine.server import logs
from engine.server.config import Config
from engine.server.metrics import ServerMetrics
from engine.server.reload import new_sync

_log = logs.event
STOP_TIMEOUT_S = 5.0  # a poll under way is abandoned after this at shutdown


class Fetcher:
    """Polls ``revocation.source_url`` every ``revocation.poll_interval_s`` on a thread;
    ``changed()`` is called (on that thread) after each poll that installed new data."""

    def __init__(
        self,
        cfg: Config,
        trust: Callable[[], TrustList],
        metrics: ServerMetrics,
        changed: Callable[[], None],
    ):
        self.cfg = cfg
        self.metrics = metrics
        self._changed = changed
        self.sync: RevocationSync = new_sync(cfg, lambda: trust().publishers)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure_log = logs.RateLimited()

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run,
            args=(self._stop, self.cfg.revocation.poll_interval_s, self._on_change),
            kwargs={"on_error": self._on_error, "on_poll": self._on_poll},
            name="essc-revocation-fetcher",
            daemon=True,  # a poll stuck in a read must not hold the process at exit
        )
        self._thread.start()

    def _run(self, *args: Any, **kwargs: Any) -> None:
        """The poll loop; a bug in it is logged and the loop started again (after a poll
        interval), never left to end the thread silently."""
        while not self._stop.is_set():
            try:
                self.sync.run(*args, **kwargs)
            except Exception:
                logging.getLogger(logs.LOGGER).exception("revocation_fetcher_failed")
                self._stop.wait(self.cfg.revocation.poll_interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)

    def status(self) -> dict[str, Any]:
        return self.sync.status()

    def _on_poll(self, outcome: SyncOutcome) -> None:
        m = self.metrics
        m.sync_last_success.set(time.time())
        m.sync_polls.labels("changed" if outcome.changed else "unchanged").inc()
        m.sync_bytes.inc(outcome.bytes)

    def _on_change(self, outcome: SyncOutcome) -> None:
        _log(
            logging.INFO,
            "revocation_synced",
            source=self.cfg.revocation.source_url,
            sequence=outcome.sequence,
            snapshot_sequence=outcome.snapshot_sequence,
            fetched=outcome.fetched,
            bytes=outcome.bytes,
            poll_started_at=round(outcome.started_at, 6),
        )
        self._changed()

    def _on_error(self, error: SyncError) -> None:
        self.metrics.sync_failures.labels(error.kind).inc()
        self._failure_log(
            logging.ERROR,
            "revocation_sync_failed",
            source=self.cfg.revocation.source_url,
            kind=error.kind,
            error=str(error),
            action="serving the data in service",
        )


def hang_up_supervisor() -> None:
    """Under a supervisor: SIGHUP to it, which reloads every worker."""
    os.kill(os.getppid(), signal.SIGHUP)
