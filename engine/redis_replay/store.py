"""The fleet's replay store: one-time nonces in Redis (standalone or Cluster), with this
process's native table in front as a first-level filter.

One call per batch (``check_and_record``, the ReplayStore interface):

1. keys under the lost-store rule (below) are refused at once: LOST (REPLAYED);
2. the local table answers what this process accepted itself: REPLAYED without a
   round trip (with safe retries on, such keys still ride in the batch's pipeline, so
   that the store can say whether the same relying party is retrying);
3. every other key goes to Redis, one pipelined round trip per master owning its
   slots, all masters at once: ``SET key tag NX PXAT expiry GET`` answers nil (FRESH:
   recorded now) or the tag recorded before (REPEAT when it is this request's tag,
   REPLAYED otherwise); an error reply (a full Redis under ``noeviction``, a slot that
   moved) or no answer within ``timeout_ms`` makes the key UNAVAILABLE (BUSY): never
   OK, never checked against the local table alone;
4. the keys Redis accepted are recorded in the local table.

The lost-store rule (RFC 4120, 3.2.3): Redis may lose what it holds (a restart without
persistence, a flush, a failover to a replica that missed the last writes).  Each
master holds a marker key, read at the head of every pipeline, and each connection
learns its server's run id; a marker gone or changed, a run id changed, or a slot
that moved to another master means nonces accepted before may be gone.  Every
presentation timestamped up to ``skew_ms`` after that moment could have been accepted
before it, so those are refused until they could no longer be fresh anyway (one
freshness window plus the skew twice): nothing accepted before a loss is accepted
again.  A node finding no marker at all cannot tell a new store from an emptied one
and applies the rule too; ``init_store`` marks a new store as such beforehand.

Runs in the verification threads: one connection per thread per master, blocking
sockets with a deadline (engine.redis_replay.resp); nothing here touches the event
loop.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from engine import _core
from engine import replay as states
from engine.redis_replay.cluster import BAD_REPLY, SlotMap, tag_for_slots
from engine.redis_replay.resp import (
    Connection,
    Endpoint,
    ReplyError,
    StoreFailure,
    pack,
    parse_address,
    parse_url,
)

KEY_PREFIX = b"essc:n:"
MARKER_KEY = b"essc:marker"
NO_TAG = b"1"  # the value of a key recorded without a relying party (no safe retry)
REFUSED = b"0"  # a key answered REPLAYED under the lost-store rule after it was set

# A master that failed is not asked again before this (doubling up to the cap): a
# dead server costs each batch nothing, and its return is noticed within the cap.
RETRY_MIN_S = 0.01
RETRY_MAX_S = 0.25
# A new connection (TCP, TLS, AUTH, INFO) may take this long even when the round-trip
# timeout is shorter: a thread's first batch must not be BUSY for a slow handshake.
CONNECT_TIMEOUT_MIN_S = 0.25

ROUND_TRIP_BUCKETS_S = (
    0.00005,
    0.0001,
    0.0002,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
)

_log = logging.getLogger("essc")


class StoreMetrics:
    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.round_trip = Histogram(
            "essc_replay_store_round_trip_seconds",
            "One pipelined round trip to one replay-store master (a batch's keys there)",
            buckets=ROUND_TRIP_BUCKETS_S,
            registry=r,
        )
        self.errors = Counter(
            "essc_replay_store_errors",
            "Replay-store failures, by kind (connect, timeout, closed, protocol, oom, "
            "moved, reply, auth, version, config; down: a master skipped while it backs "
            "off)",
            ["kind"],
            registry=r,
        )
        self.keys = Counter(
            "essc_replay_store_keys",
            "Keys checked by the replay store, by answer",
            ["answer"],
            registry=r,
        )
        self.local_hits = Counter(
            "essc_replay_local_hits",
            "Keys the local first-level filter had seen (answered without the store "
            "unless safe retries are on)",
            registry=r,
        )
        self.losses = Counter(
            "essc_replay_store_losses",
            "Times the store was found to have lost nonces, by cause",
            ["cause"],
            registry=r,
        )
        self.masters_up = Gauge(
            "essc_replay_store_masters_up", "Replay-store masters answering", registry=r
        )
        self.refusing_until = Gauge(
            "essc_replay_store_lost_rule_until_seconds",
            "Unix time until which the lost-store rule refuses presentations (0: not now)",
            registry=r,
        )


class _Master:
    """What every thread shares about one master: where it is, its marker, the run id
    seen last, and when it may be asked again after a failure."""

    def __init__(self, endpoint: Endpoint, marker_key: bytes):
        self.endpoint = endpoint
        self.marker_key = marker_key
        self.marker: bytes | None = None  # the marker value this process knows
        self.run_id = ""
        self.retry_at = 0.0
        self.backoff = 0.0
        self.up = False
        self.last_error = ""
        # Bumped at every failure: the other threads' connections from before it are
        # dropped unused (one thread learning the server died is enough for all).
        self.generation = 0


class RedisReplayStore:
    """ReplayStore over Redis.  ``seeds`` are Cluster seed nodes (``redis_url`` then
    empty); ``local`` the first-level filter (a native table; None: none)."""

    def __init__(
        self,
        *,
        redis_url: str = "",
        seeds: Sequence[str] = (),
        timeout_ms: float = 50.0,
        horizon_ms: int,
        skew_ms: int,
        safe_retries: bool = True,
        local: _core.ReplayTable | None = None,
        registry: CollectorRegistry | None = None,
        tls: ssl.SSLContext | None = None,
        clock: Any = time.time,
    ):
        if bool(redis_url) == bool(seeds):
            raise ValueError("give redis_url or cluster seeds, one of the two")
        self.cluster = bool(seeds)
        self.timeout_s = timeout_ms / 1000
        self.horizon_ms = horizon_ms
        self.skew_ms = skew_ms
        self.safe_retries = safe_retries
        self.local = local
        self.metrics = StoreMetrics(registry or CollectorRegistry())
        self._tls = tls
        self._clock = clock
        self._lock = threading.Lock()  # the shared state below
        self._threads = threading.local()  # per thread: {address: Connection}
        self._connections: list[Connection] = []
        self._closed = False
        self._refuse_through_ms = -1  # presentations timestamped up to this are refused
        self._refuse_until_ms = 0  # ... until this time
        self._masters: list[_Master] = []
        self._slots: SlotMap | None = None
        self._seeds = [parse_address(s) for s in seeds]
        self._refresh_needed = self.cluster
        if not self.cluster:
            self._masters = [_Master(parse_url(redis_url), MARKER_KEY)]
        self._refresh_lock = threading.Lock()

    # --- the ReplayStore interface ------------------------------------------------------

    def check_and_record(
        self,
        keys: npt.NDArray[np.uint8],
        expires_ms: npt.NDArray[np.uint64],
        now_ms: int,
        tags: Sequence[bytes | None] | None = None,
    ) -> list[int]:
        m = len(keys)
        out = np.full(m, states.FRESH, dtype=np.uint8)
        if not m:
            return []
        keys = np.ascontiguousarray(keys, dtype=np.uint8)
        expires = np.asarray(expires_ms, dtype=np.uint64)
        timestamps = expires.astype(np.int64) - self.horizon_ms
        ask = np.ones(m, dtype=bool)
        with self._lock:
            refuse_through = self._refuse_through_ms if now_ms <= self._refuse_until_ms else -1
        if refuse_through >= 0:
            lost = timestamps <= refuse_through
            out[lost] = states.LOST
            ask &= ~lost
        if self.local is not None and ask.any():
            seen = np.zeros(m, dtype=bool)
            seen[ask] = self.local.seen(keys[ask], now_ms)
            hits = int(seen.sum())
            if hits:
                self.metrics.local_hits.inc(hits)
                if not self.safe_retries:
                    out[seen] = states.REPLAYED
                    ask &= ~seen
        idx = np.flatnonzero(ask)
        if len(idx):
            use_tags = tags if self.safe_retries else None
            answers, lost_now = self._ask(keys, expires, idx, use_tags, now_ms)
            out[idx] = answers
            if lost_now:
                self._refuse_recent(keys, idx, answers, timestamps, out, use_tags)
        fresh = np.flatnonzero(out == states.FRESH)
        if self.local is not None and len(fresh):
            # Only what Redis accepted: a key refused or unanswered must stay askable.
            local = np.asarray(self.local.check_and_record(keys[fresh], expires[fresh], now_ms))
            out[fresh[local == states.REPLAYED]] = states.REPLAYED
        self._count(out)
        result: list[int] = out.tolist()
        return result

    # --- status and life cycle ----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now_ms = int(self._clock() * 1000)
        with self._lock:
            masters = [
                {
                    "address": mst.endpoint.address,
                    "up": mst.up,
                    "run_id": mst.run_id or None,
                    "last_error": mst.last_error or None,
                }
                for mst in self._masters
            ]
            refusing = self._refuse_until_ms if now_ms <= self._refuse_until_ms else None
            refuse_through = self._refuse_through_ms if refusing else None
        return {
            "kind": "redis_cluster" if self.cluster else "redis",
            "state": "up" if masters and all(m["up"] for m in masters) else "down",
            "masters": masters,
            "safe_retries": self.safe_retries,
            "lost_rule_until_ms": refusing,
            "lost_rule_refuses_through_ms": refuse_through,
        }

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._connections = self._connections, []
        for c in conns:
            c.close()

    def connect(self) -> None:
        """Reaches every master once (the server calls it at start, so the state shows
        at once and a first batch pays no connect); failures are only logged: the
        store is asked again per batch."""
        try:
            self._refresh_if_needed()
            masters = list(self._masters)
            deadline = time.monotonic() + max(self.timeout_s, 1.0)
            for k, mst in enumerate(masters):
                self._connection(k, mst, deadline)
                self._read_markers([(k, mst)], deadline, int(self._clock() * 1000))
        except StoreFailure as err:
            self._note_failure(None, err)

    # --- the round trip -----------------------------------------------------------------

    def _ask(
        self,
        keys: npt.NDArray[np.uint8],
        expires: npt.NDArray[np.uint64],
        idx: npt.NDArray[np.intp],
        tags: Sequence[bytes | None] | None,
        now_ms: int,
    ) -> tuple[npt.NDArray[np.uint8], bool]:
        """The store's answer for keys[idx], and whether a loss was found on the way."""
        answers = np.full(len(idx), states.UNAVAILABLE, dtype=np.uint8)
        try:
            self._refresh_if_needed()
        except StoreFailure as err:
            self._note_failure(None, err)
            return answers, False
        masters, slots = self._topology()
        if slots is not None:
            owner = slots.owner[_core.redis_slots(KEY_PREFIX, keys[idx]).astype(np.intp)]
            groups = [(k, np.flatnonzero(owner == k)) for k in range(len(masters))]
        else:
            groups = [(0, np.arange(len(idx)))]
        deadline = time.monotonic() + self.timeout_s
        sent: list[tuple[int, _Master, Connection, npt.NDArray[np.intp], float]] = []
        lost = False
        for k, pos in groups:
            if not len(pos):
                continue
            mst = masters[k]
            try:
                conn, lost_at_connect = self._connection(k, mst, deadline)
                lost |= lost_at_connect
                if conn.fresh:
                    # A connection made for this batch: its round trip gets a whole
                    # timeout of its own, whatever the handshake took.
                    deadline = max(deadline, time.monotonic() + self.timeout_s)
                    conn.fresh = False
                commands = self._commands(mst, keys, expires, idx[pos], tags)
                started = time.perf_counter()
                conn.send(commands, deadline)
                sent.append((k, mst, conn, pos, started))
            except StoreFailure as err:
                self._note_failure(mst, err)
        for _k, mst, conn, pos, started in sent:
            try:
                replies = conn.receive(1 + len(pos), deadline)
            except StoreFailure as err:
                self._note_failure(mst, err)
                continue
            self.metrics.round_trip.observe(time.perf_counter() - started)
            marker, replies = replies[0], replies[1:]
            lost |= self._check_marker(mst, marker, now_ms)
            answers[pos] = self._answers(replies, tags, idx[pos])
            with self._lock:
                was_up, mst.up, mst.backoff = mst.up, True, 0.0
            if not was_up:
                self._update_up()
        if lost:
            self._repair_markers(masters, now_ms)
        return answers, lost

    def _commands(
        self,
        mst: _Master,
        keys: npt.NDArray[np.uint8],
        expires: npt.NDArray[np.uint64],
        which: npt.NDArray[np.intp],
        tags: Sequence[bytes | None] | None,
    ) -> bytes:
        """The marker read, then SET NX PXAT GET per key: packed in the core."""
        return _core.redis_set_nx_pipeline(
            mst.marker_key,
            KEY_PREFIX,
            keys[which],
            expires[which],
            None if tags is None else [tags[i] for i in which.tolist()],
            NO_TAG,
        )

    def _answers(
        self,
        replies: list[object],
        tags: Sequence[bytes | None] | None,
        which: npt.NDArray[np.intp],
    ) -> npt.NDArray[np.uint8]:
        """FRESH (nil), REPEAT (this request's tag), REPLAYED (another value) or
        UNAVAILABLE (an error reply) per key: read in the core."""
        mine = None if tags is None else [tags[i] for i in which.tolist()]
        out, errors = _core.redis_set_nx_answers(replies, mine)
        for j in errors:
            self._reply_error(replies[j])
        return out

    def _reply_error(self, reply: object) -> None:
        text = str(reply)
        head = text.split(" ", 1)[0]
        kind = {
            "OOM": "oom",
            "MOVED": "moved",
            "ASK": "moved",
            "CLUSTERDOWN": "moved",
            "TRYAGAIN": "moved",
        }.get(head, "reply")
        self.metrics.errors.labels(kind).inc()
        if kind == "moved":
            self._refresh_needed = True
        _RATE.log(logging.WARNING, "replay_store_error", kind=kind, reply=text[:200])

    # --- connections, markers and losses ------------------------------------------------

    def _connection(self, k: int, mst: _Master, deadline: float) -> tuple[Connection, bool]:
        """This thread's connection to master k (connected now if it was not), and
        whether connecting found the server restarted (a new run id)."""
        pool: dict[str, Connection] | None = getattr(self._threads, "pool", None)
        if pool is None:
            pool = self._threads.pool = {}
        address = mst.endpoint.address
        conn = pool.get(address)
        if conn is not None and conn.connected and conn.generation == mst.generation:
            return conn, False
        if conn is not None:
            conn.close()
        with self._lock:
            if self._closed:
                raise StoreFailure("closed", "the store is closed")
            if time.monotonic() < mst.retry_at:
                raise StoreFailure("down", f"{address}: down ({mst.last_error})")
        conn = Connection(mst.endpoint, self._tls, self.timeout_s)
        conn.generation = mst.generation
        conn.connect(max(deadline, time.monotonic() + CONNECT_TIMEOUT_MIN_S))
        if conn.version < (7, 0):
            conn.close()
            raise StoreFailure("version", f"{address}: Redis 7.0 or newer needed (SET NX GET)")
        policy = conn.info.get("maxmemory_policy", "")
        if policy != "noeviction":
            # An evicting Redis forgets live nonces when full: never used.
            conn.close()
            raise StoreFailure(
                "config", f"{address}: maxmemory-policy is {policy!r}, not noeviction"
            )
        pool[address] = conn
        with self._lock:
            self._connections.append(conn)
            restarted = bool(mst.run_id) and conn.run_id != mst.run_id
            mst.run_id = conn.run_id
        if restarted:
            self._lost(mst, "restarted (new run id)", int(self._clock() * 1000))
        return conn, restarted

    def _read_markers(
        self, masters: list[tuple[int, _Master]], deadline: float, now_ms: int
    ) -> bool:
        lost = False
        for k, mst in masters:
            conn, restarted = self._connection(k, mst, deadline)
            lost |= restarted
            (marker,) = conn.call(pack(b"GET", mst.marker_key), 1, deadline)
            lost |= self._check_marker(mst, marker, now_ms)
            with self._lock:
                mst.up = True
        self._update_up()
        if lost:
            self._repair_markers([m for _, m in masters], now_ms)
        return lost

    def _check_marker(self, mst: _Master, marker: object, now_ms: int) -> bool:
        """Whether the marker read shows a loss (it learns the marker on first sight)."""
        if marker is not None and not isinstance(marker, bytes):
            if isinstance(marker, ReplyError):
                self._reply_error(marker)
            return False  # not an answer about the marker: the keys' replies say more
        with self._lock:
            known = mst.marker
            if marker is not None and known is None:
                mst.marker = marker
                return False
            if marker is not None and marker == known:
                return False
            if marker is not None:
                mst.marker = marker
        cause = "marker missing" if marker is None else "marker changed"
        self._lost(mst, cause, now_ms)
        return True

    def _repair_markers(self, masters: list[_Master], now_ms: int) -> None:
        """Puts a marker back where one is missing (the first node to get there wins;
        every node then reads the winner's)."""
        deadline = time.monotonic() + self.timeout_s
        for k, mst in enumerate(masters):
            try:
                conn, _ = self._connection(k, mst, deadline)
                new = os.urandom(16).hex().encode()
                _, marker = conn.call(
                    pack(b"SET", mst.marker_key, new, b"NX") + pack(b"GET", mst.marker_key),
                    2,
                    deadline,
                )
                if isinstance(marker, bytes):
                    with self._lock:
                        mst.marker = marker
            except StoreFailure as err:
                self._note_failure(mst, err)

    def _lost(self, mst: _Master, cause: str, now_ms: int) -> None:
        """Applies the lost-store rule from now on."""
        through = now_ms + self.skew_ms
        until = through + self.horizon_ms + self.skew_ms
        with self._lock:
            self._refuse_through_ms = max(self._refuse_through_ms, through)
            self._refuse_until_ms = max(self._refuse_until_ms, until)
            until = self._refuse_until_ms
        self.metrics.losses.labels(cause.split(" (")[0]).inc()
        self.metrics.refusing_until.set(until / 1000)
        _log.warning(
            "replay_store_lost",
            extra={
                "fields": {
                    "master": mst.endpoint.address,
                    "cause": cause,
                    "refuses_through_ms": through,
                    "until_ms": until,
                }
            },
        )

    def _refuse_recent(
        self,
        keys: npt.NDArray[np.uint8],
        idx: npt.NDArray[np.intp],
        answers: npt.NDArray[np.uint8],
        timestamps: npt.NDArray[np.int64],
        out: npt.NDArray[np.uint8],
        tags: Sequence[bytes | None] | None,
    ) -> None:
        """A loss found in this very round trip: its FRESH and REPEAT answers for keys
        under the rule become LOST, and (with tags) their records are overwritten, so
        that a retry is not taken for a repeat of an OK that was never given."""
        with self._lock:
            through = self._refuse_through_ms
        hit = idx[(timestamps[idx] <= through) & np.isin(answers, (states.FRESH, states.REPEAT))]
        out[hit] = states.LOST
        if tags is None or not len(hit):
            return
        deadline = time.monotonic() + self.timeout_s
        masters, slots = self._topology()
        for k, mst in enumerate(masters):
            rows = hit
            if slots is not None:
                owner = slots.owner[_core.redis_slots(KEY_PREFIX, keys[hit]).astype(np.intp)]
                rows = hit[owner == k]
            if not len(rows):
                continue
            try:
                conn, _ = self._connection(k, mst, deadline)
                cmds = b"".join(
                    pack(b"SET", KEY_PREFIX + keys[i].tobytes(), REFUSED, b"XX", b"KEEPTTL")
                    for i in rows.tolist()
                )
                conn.call(cmds, len(rows), deadline)
            except StoreFailure as err:
                self._note_failure(mst, err)

    def _note_failure(self, mst: _Master | None, err: StoreFailure) -> None:
        self.metrics.errors.labels(err.kind).inc()
        if err.kind == "down":  # skipped while backing off: the backoff stands
            return
        if mst is not None:
            with self._lock:
                mst.up = False
                mst.generation += 1
                mst.last_error = str(err)
                if err.kind in _CANNOT_CONNECT:
                    # Connecting failed: not again before the back-off.  A connection
                    # that failed once made is simply made again by the next batch.
                    mst.backoff = min(RETRY_MAX_S, max(RETRY_MIN_S, 2 * mst.backoff))
                    mst.retry_at = time.monotonic() + mst.backoff
            if self.cluster:
                self._refresh_needed = True  # a failover moves its slots elsewhere
        _RATE.log(logging.WARNING, "replay_store_unavailable", error=str(err))
        self._update_up()

    def _topology(self) -> tuple[list[_Master], SlotMap | None]:
        """The masters and (Cluster) the slot map, read together: a refresh in another
        thread replaces both at once."""
        with self._lock:
            return list(self._masters), self._slots

    def _update_up(self) -> None:
        with self._lock:
            self.metrics.masters_up.set(sum(m.up for m in self._masters))

    # --- Cluster: the slot map ----------------------------------------------------------

    def _refresh_if_needed(self) -> None:
        with self._refresh_lock:  # one thread reads the map; the others wait for it
            if self._refresh_needed:
                self._refresh_slots()
                self._refresh_needed = False

    def _refresh_slots(self) -> None:
        """Reads CLUSTER SLOTS from the first seed (or known master) that answers; a
        slot now served by another master counts as a loss (a failover may have
        promoted a replica that missed the last writes)."""
        deadline = time.monotonic() + max(self.timeout_s, 0.5)
        candidates = [m.endpoint for m in self._masters] + self._seeds
        last: StoreFailure | None = None
        for endpoint in candidates:
            conn = Connection(endpoint, self._tls)
            try:
                conn.connect(deadline)
                (reply,) = conn.call(pack(b"CLUSTER", b"SLOTS"), 1, deadline)
            except StoreFailure as err:
                last = err
                continue
            finally:
                conn.close()
            if isinstance(reply, ReplyError):
                last = StoreFailure("reply", f"{endpoint.address}: {reply}")
                continue
            try:
                new = SlotMap.from_cluster_slots(reply)
            except BAD_REPLY as e:
                last = StoreFailure("protocol", f"{endpoint.address}: {e}")
                continue
            if not new.complete:
                last = StoreFailure("moved", f"{endpoint.address}: not every slot is served")
                continue
            self._install(new)
            return
        raise last or StoreFailure("connect", "no cluster node answered")

    def _install(self, new: SlotMap) -> None:
        old = self._slots
        by_address = {m.endpoint.address: m for m in self._masters}
        masters = []
        for k, (host, port) in enumerate(new.masters):
            endpoint = Endpoint(host=host, port=port)
            mst = by_address.get(endpoint.address)
            if mst is None:
                tag = tag_for_slots(new.first_slot[k], new.last_slot[k])
                mst = _Master(endpoint, MARKER_KEY + b":{" + tag + b"}")
            else:
                tag = tag_for_slots(new.first_slot[k], new.last_slot[k])
                mst.marker_key = MARKER_KEY + b":{" + tag + b"}"
            masters.append(mst)
        with self._lock:
            self._masters = masters
            self._slots = new
        if old is not None and old.assignment() != new.assignment():
            self._lost(masters[0], "slots moved to another master", int(self._clock() * 1000))

    def _count(self, out: npt.NDArray[np.uint8]) -> None:
        counts = np.bincount(out, minlength=len(states.STATES))
        for state, name in _ANSWER_NAMES.items():
            if counts[state]:
                self.metrics.keys.labels(name).inc(int(counts[state]))


_CANNOT_CONNECT = frozenset({"connect", "auth", "version", "config"})

_ANSWER_NAMES = {
    states.FRESH: "fresh",
    states.REPLAYED: "replayed",
    states.NO_ROOM: "no_room",
    states.UNAVAILABLE: "unavailable",
    states.REPEAT: "repeat",
    states.LOST: "lost",
}


class _RateLimitedLog:
    """At most one line per event name per second (a dead store fails every batch)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, event: str, **fields: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(event, -1e9) < 1.0:
                self._suppressed[event] = self._suppressed.get(event, 0) + 1
                return
            self._last[event] = now
            suppressed = self._suppressed.pop(event, 0)
        _log.log(level, event, extra={"fields": {**fields, "suppressed": suppressed}})


_RATE = _RateLimitedLog()


def _masters_of(redis_url: str, seeds: Sequence[str], timeout_ms: float) -> list[_Master]:
    """The masters a store configuration names (a Cluster's from CLUSTER SLOTS)."""
    if seeds:
        probe = RedisReplayStore(seeds=seeds, horizon_ms=1, skew_ms=0, timeout_ms=timeout_ms)
        probe._refresh_slots()
        return probe._masters
    return [_Master(parse_url(redis_url), MARKER_KEY)]


def init_store(
    *, redis_url: str = "", seeds: Sequence[str] = (), timeout_ms: float = 1000
) -> list[str]:
    """Marks a new, empty store as such (a marker on every master), so that the nodes
    do not apply the lost-store rule to it; returns the masters marked.  Refuses a
    store that already holds replay keys or a marker (StoreFailure)."""
    deadline = time.monotonic() + timeout_ms / 1000
    masters = _masters_of(redis_url, seeds, timeout_ms)
    marked = []
    for mst in masters:
        conn = Connection(mst.endpoint)
        try:
            conn.connect(deadline)
            (marker,) = conn.call(pack(b"GET", mst.marker_key), 1, deadline)
            if marker is not None:
                raise StoreFailure("reply", f"{mst.endpoint.address}: already initialised")
            if _holds_replay_keys(conn, deadline):
                raise StoreFailure("reply", f"{mst.endpoint.address}: holds replay keys already")
            (ok,) = conn.call(
                pack(b"SET", mst.marker_key, os.urandom(16).hex().encode(), b"NX"), 1, deadline
            )
            if ok != b"OK":
                raise StoreFailure("reply", f"{mst.endpoint.address}: marker not set ({ok!r})")
            marked.append(mst.endpoint.address)
        finally:
            conn.close()
    return marked


def _holds_replay_keys(conn: Connection, deadline: float) -> bool:
    cursor = b"0"
    while True:
        (reply,) = conn.call(
            pack(b"SCAN", cursor, b"MATCH", KEY_PREFIX + b"*", b"COUNT", b"1000"), 1, deadline
        )
        if not isinstance(reply, list) or len(reply) != 2:
            raise StoreFailure("protocol", f"{conn.endpoint.address}: SCAN answered {reply!r}")
        cursor, found = reply
        if found:
            return True
        if cursor == b"0":
            return False


def inspect_store(
    *, redis_url: str = "", seeds: Sequence[str] = (), timeout_ms: float = 1000
) -> dict[str, Any]:
    """What each master holds and runs, read only (``replay-store status``)."""
    deadline = time.monotonic() + timeout_ms / 1000
    masters = _masters_of(redis_url, seeds, timeout_ms)
    out = []
    for mst in masters:
        conn = Connection(mst.endpoint)
        entry: dict[str, Any] = {"address": mst.endpoint.address}
        try:
            conn.connect(deadline)
            marker, keys = conn.call(pack(b"GET", mst.marker_key) + pack(b"DBSIZE"), 2, deadline)
            entry.update(
                up=True,
                version=conn.info.get("redis_version"),
                run_id=conn.run_id,
                maxmemory_policy=conn.info.get("maxmemory_policy"),
                used_memory=int(conn.info.get("used_memory", 0)),
                marker=marker.decode() if isinstance(marker, bytes) else None,
                keys=keys,
            )
        except StoreFailure as e:
            entry.update(up=False, error=str(e))
        finally:
            conn.close()
        out.append(entry)
    ok = all(m["up"] and m["marker"] and m["maxmemory_policy"] == "noeviction" for m in out)
    return {"kind": "redis_cluster" if seeds else "redis", "usable": ok, "masters": out}
