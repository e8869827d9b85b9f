"""What the server admits: presentations in flight (``Admission``) and connections
(``connection_limit``).

Both limits exist so that overload is refused at once, with an answer, instead of
queueing without bound or being dropped by the kernel without a word: a request
beyond ``Admission.limit`` is answered BUSY, a connection beyond
``connection_limit()`` gets ``server_full``.  Neither limit ever falls below what an
idle server needs (one request of the largest size; one connection).
"""

from __future__ import annotations

import logging
import os

from engine.server import logs
from engine.server.config import ConfigError

IN_FLIGHT_LIMIT = "server in-flight limit"
QUEUE_TIME_LIMIT = "server queue time limit"


class Admission:
    """How many presentations may be queued or verifying: ``max_in_flight``, and no more
    than the workers verify in ``max_wait_s`` at the rate they are achieving now.

    Beyond that, a new request would wait longer than it is worth: it is answered BUSY
    at once instead.  The rate is measured from the batches the workers run (a worker's
    wall time per presentation, smoothed), so it follows the machine as it is, busy or
    not.  Only batches of at least a quarter of ``max_batch`` count: a long queue is
    verified in full batches, and the small batches of low load (dearer per
    presentation, and when no limit binds) would make the limit too tight.  Until such
    a batch has run, only ``max_in_flight`` applies; the limit never falls below
    ``floor`` (at least one request of the largest size), so an idle server takes any
    request.
    """

    SMOOTHING = 0.1  # weight of the newest full batch in the per-presentation cost

    def __init__(
        self, max_in_flight: int, max_wait_s: float, workers: int, *, floor: int, max_batch: int
    ):
        self.max_in_flight = max_in_flight
        self.max_wait_s = max_wait_s
        self.workers = workers
        self.floor = min(floor, max_in_flight)
        self.max_batch = max_batch
        self.cost_s: float | None = None  # a worker's seconds per presentation
        self.limit = max_in_flight
        self.reason = IN_FLIGHT_LIMIT  # which bound ``limit`` is, for BUSY answers
        self.reason_bytes = self.reason.encode()

    def batch_done(self, items: int, seconds: float) -> None:
        if self.max_wait_s <= 0 or 4 * items < self.max_batch:
            return
        cost = seconds / items
        weight = self.SMOOTHING * min(1.0, items / self.max_batch)
        self.cost_s = cost if self.cost_s is None else self.cost_s + weight * (cost - self.cost_s)
        by_time = int(self.max_wait_s * self.workers / self.cost_s)
        limit = min(self.max_in_flight, max(self.floor, by_time))
        reason = IN_FLIGHT_LIMIT if limit == self.max_in_flight else QUEUE_TIME_LIMIT
        if reason is not self.reason:
            self.reason, self.reason_bytes = reason, reason.encode()
        self.limit = limit

    @property
    def rate(self) -> float | None:
        """Presentations per second all workers achieve (None until measured)."""
        return None if not self.cost_s else self.workers / self.cost_s


# Descriptors kept free of connections: listener, metrics, log, data files, the
# event loop's own, accepts in progress.
RESERVED_DESCRIPTORS = 64


def connection_limit(configured: int, workers: int) -> int:
    """The connections the server accepts: ``configured``, unless the descriptor limit
    is lower.  Raises the soft limit (RLIMIT_NOFILE) towards the hard one first, where
    allowed, and logs what was chosen: a connection past the descriptor limit would
    otherwise be dropped by the kernel with neither ``server_full`` nor a log line."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 32
    reserve = RESERVED_DESCRIPTORS + 2 * workers + in_use
    want = configured + reserve
    raised_from = None
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if new > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
                raised_from, soft = soft, new
            except (ValueError, OSError):
                pass
    limit = configured if soft == resource.RLIM_INFINITY else min(configured, soft - reserve)
    if limit < 1:
        raise ConfigError(
            f"the descriptor limit ({soft}) leaves no room for connections; raise it "
            f"(ulimit -n, LimitNOFILE=) to at least {want}"
        )
    logs.event(
        logging.INFO if limit == configured else logging.WARNING,
        "connection_limit",
        limit=limit,
        configured=configured,
        nofile_soft=None if soft == resource.RLIM_INFINITY else soft,
        nofile_hard=None if hard == resource.RLIM_INFINITY else hard,
        raised_from=raised_from,
    )
    return limit
