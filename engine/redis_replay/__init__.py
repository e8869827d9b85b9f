"""The fleet's shared replay store: one-time nonces in Redis or Redis Cluster, so that a
presentation is accepted once across every node and across restarts
(``RedisReplayStore``, the ReplayStore of ``engine.replay``).

    resp     Redis's wire protocol over blocking sockets with deadlines (hiredis parses)
    cluster  key slots and the map of masters
    store    the store: first-level filter, pipelined round trips, the lost-store rule
"""

from engine.redis_replay.store import RedisReplayStore, init_store

__all__ = ["RedisReplayStore", "init_store"]
