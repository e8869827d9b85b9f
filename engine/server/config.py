"""Server configuration: defaults, then a TOML file, then environment, then flags.

Every setting lives in one section dataclass below, with its default and meaning;
``docs/OPERATIONS.md`` lists them.  A setting named ``section.key`` can be given as

- ``key = value`` under ``[section]`` in the TOML file (``--config FILE``),
- the environment variable ``ESSC_SECTION_KEY`` (e.g. ``ESSC_SERVER_PORT=7701``),
- ``--set section.key=value`` on the command line (or a dedicated flag such as --port).

Later sources win.  Unknown sections or keys and values of the wrong type are errors
that name their source, so a typo never silently falls back to a default.  The
project's build and test switches (``NOT_SETTINGS``) share the prefix and are not
settings.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from engine.errors import EsscError
from engine.server.proxy_protocol import networks as proxy_networks

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib


# ESSC_* variables of the build, tests, benchmarks and fuzzing (docs/TESTING.md): a
# server they start inherits them, and must not read them as settings.
NOT_SETTINGS = frozenset(
    {
        "ESSC_LONG_TESTS",
        "ESSC_TEST_LOOPS",
        "ESSC_BENCH_QUICK",
        "ESSC_SANITIZE",
        "ESSC_FUZZ_CORE",
        "ESSC_FUZZ_TMP",
    }
)


class ConfigError(EsscError):
    """A setting that cannot be used; the message names where it came from."""


@dataclasses.dataclass
class ServerSection:
    host: str = "127.0.0.1"
    port: int = 7700
    max_frame_bytes: int = 1 << 20  # larger frames: error, connection closed
    max_connections: int = 1024
    max_in_flight_per_connection: int = 1024  # presentations queued or verifying
    max_in_flight: int = 32768  # all connections together: beyond it, BUSY
    # Queued work the workers would need longer than this to verify (at their measured
    # rate): BUSY at once rather than an answer that comes too late.  0: off.
    max_queue_ms: float = 20.0  # 4x the 5 ms p99 target
    max_batch_items: int = 256  # presentations in one verify_batch / ids in one check
    idle_timeout_s: float = 300.0  # no complete frame for this long: closed
    frame_timeout_s: float = 10.0  # a started frame must complete within this
    drain_timeout_s: float = 10.0  # SIGTERM: longest wait for in-flight work
    close_grace_s: float = 2.0  # a closing connection's unread responses: then reset
    tls_handshake_timeout_s: float = 10.0  # a TLS handshake not done by then: closed
    max_protocol_errors: int = 16  # error responses before a connection is closed
    tls_cert: str = ""  # PEM certificate chain; TLS is on when set
    tls_key: str = ""  # PEM private key
    tls_client_ca: str = ""  # PEM CA bundle: when set, clients must present a certificate
    # Event-loop processes sharing the port (SO_REUSEPORT) under one supervisor; 0: one
    # per core.  1: the process serves by itself, no supervisor.
    processes: int = 1
    # Balancer addresses (IPs or CIDR blocks) whose connections start with a PROXY
    # protocol v2 header naming the real client; connections from elsewhere must not.
    proxy_protocol_from: list[str] = dataclasses.field(default_factory=list)
    # HAProxy agent-check port: answers "up ready" while serving, "drain" while
    # draining (so the balancer stops sending before the listener closes); 0: off.
    agent_port: int = 0
    # With agent_port: on SIGTERM the agent answers "drain" this long while the server
    # still serves as usual, so the balancer moves new connections away before the
    # listener closes (docs/OPERATIONS.md, "Behind HAProxy").  At least agent-inter.
    drain_notice_s: float = 1.0


@dataclasses.dataclass
class BatchingSection:
    max_batch: int = 128  # presentations per native batch
    # How long the oldest request may wait for its batch to fill while a worker is free.
    # 0 (measured best: docs/BENCHMARKS.md): a free worker takes what is there at once,
    # and batches grow by themselves while the workers are busy.
    latency_budget_ms: float = 0.0
    workers: int = 0  # batches verified concurrently; 0: one per core
    threads: int = 1  # native threads per batch; 0: every core
    # How long a thread holds the GIL while another waits for it (sys.setswitchinterval);
    # 0: Python's default (5 ms), which starves the verification threads under overload.
    switch_interval_ms: float = 0.5


@dataclasses.dataclass
class TrustSection:
    root_public_key: str = ""  # 64 hex characters: the pinned national root key
    trust_list: str = ""  # path of the signed trust list


@dataclasses.dataclass
class RevocationSection:
    snapshot: str = ""  # path of the revocation snapshot; empty: no revocation data
    deltas: list[str] = dataclasses.field(default_factory=list)
    max_age_s: float = 86400.0  # older data: REVOCATION_DATA_STALE (fail closed)
    fail_open: bool = False  # use stale data instead of failing closed
    # Where the engine keeps the private copies it maps; empty: /dev/shm/essc-engine-<uid>
    private_dir: str = ""
    # Refuse files the national platform did not sign (a revocation publisher key of the
    # trust list).  false: unsigned files load too, logged at every load (tests, migration).
    require_signature: bool = True
    # The rollback state: the highest data accepted, kept across restarts.  Empty: in
    # sync_dir with a source_url, else beside the snapshot (.essc-revocation-accepted.json).
    state_file: str = ""
    # Go below what state_file records, once (serve --allow-revocation-rollback).
    allow_rollback: bool = False
    # The publication point to pull from (HTTP or HTTPS: the directory holding
    # index.essc), instead of snapshot/deltas; fetched files go to sync_dir.
    source_url: str = ""
    sync_dir: str = ""
    poll_interval_s: float = 30.0
    source_ca: str = ""  # PEM CA bundle for an https source (empty: the system's)
    source_timeout_s: float = 10.0  # one HTTP request, connect and each read


@dataclasses.dataclass
class VerificationSection:
    freshness_ms: int = 60_000
    skew_ms: int = 5_000
    replay_capacity: int = 10_000_000
    simd: bool = True  # AVX-512 IFMA arithmetic where the CPU has it (off: portable code)


@dataclasses.dataclass
class ReplaySection:
    # The shared one-time-nonce store of a fleet (docs/OPERATIONS.md, "Shared replay
    # store"): redis://HOST:PORT/DB, rediss://HOST:PORT/DB (TLS) or unix://PATH.
    # Empty (and no cluster nodes): nonces are remembered in this process only.
    redis_url: str = ""
    # Redis Cluster seed nodes, HOST:PORT each (instead of redis_url).
    redis_cluster_nodes: list[str] = dataclasses.field(default_factory=list)
    # A store round trip not answered within this: BUSY (replay_store_unavailable).
    redis_timeout_ms: float = 50.0
    redis_tls_ca: str = ""  # PEM CA bundle for rediss:// (empty: the system's)
    # A retry of an accepted presentation by the relying party that got the answer is
    # answered with the original verdict and "repeat": true (docs/PROTOCOL.md).
    safe_retries: bool = True


@dataclasses.dataclass
class MetricsSection:
    host: str = "127.0.0.1"
    port: int = 9700  # Prometheus exposition; 0: off


@dataclasses.dataclass
class ReloadSection:
    watch_interval_s: float = 0.0  # poll the data files for changes; 0: SIGHUP only


@dataclasses.dataclass
class LogSection:
    level: str = "info"
    audit: bool = False  # one line per verified presentation (ids and verdict only)


@dataclasses.dataclass
class Config:
    server: ServerSection = dataclasses.field(default_factory=ServerSection)
    batching: BatchingSection = dataclasses.field(default_factory=BatchingSection)
    trust: TrustSection = dataclasses.field(default_factory=TrustSection)
    revocation: RevocationSection = dataclasses.field(default_factory=RevocationSection)
    verification: VerificationSection = dataclasses.field(default_factory=VerificationSection)
    replay: ReplaySection = dataclasses.field(default_factory=ReplaySection)
    metrics: MetricsSection = dataclasses.field(default_factory=MetricsSection)
    reload: ReloadSection = dataclasses.field(default_factory=ReloadSection)
    log: LogSection = dataclasses.field(default_factory=LogSection)

    def set(self, dotted: str, value: Any, source: str) -> None:
        section_name, _, key = dotted.partition(".")
        section = getattr(self, section_name, None)
        if section is None or not dataclasses.is_dataclass(section):
            raise ConfigError(f"{source}: unknown section {section_name!r}")
        hints = typing.get_type_hints(type(section))
        if key not in hints:
            raise ConfigError(f"{source}: unknown setting {dotted!r}")
        setattr(section, key, _coerce(hints[key], value, f"{source}: {dotted}"))

    def validate(self) -> Config:
        s, b = self.server, self.batching
        positive = {
            "server.max_frame_bytes": s.max_frame_bytes,
            "server.max_connections": s.max_connections,
            "server.max_in_flight_per_connection": s.max_in_flight_per_connection,
            "server.max_in_flight": s.max_in_flight,
            "server.max_batch_items": s.max_batch_items,
            "server.idle_timeout_s": s.idle_timeout_s,
            "server.frame_timeout_s": s.frame_timeout_s,
            "server.drain_timeout_s": s.drain_timeout_s,
            "server.close_grace_s": s.close_grace_s,
            "server.tls_handshake_timeout_s": s.tls_handshake_timeout_s,
            "server.max_protocol_errors": s.max_protocol_errors,
            "batching.max_batch": b.max_batch,
            "verification.freshness_ms": self.verification.freshness_ms,
            "verification.replay_capacity": self.verification.replay_capacity,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        if b.switch_interval_ms < 0:
            raise ConfigError("batching.switch_interval_ms must not be negative")
        if s.max_queue_ms < 0:
            raise ConfigError(f"server.max_queue_ms must not be negative, got {s.max_queue_ms}")
        if b.latency_budget_ms < 0 or b.threads < 0:
            raise ConfigError(
                "batching.latency_budget_ms and batching.threads must not be negative"
            )
        if s.processes < 0:
            raise ConfigError(f"server.processes must not be negative, got {s.processes}")
        r = self.replay
        if r.redis_url and r.redis_cluster_nodes:
            raise ConfigError("replay.redis_url and replay.redis_cluster_nodes: one or the other")
        if r.redis_timeout_ms <= 0:
            raise ConfigError(f"replay.redis_timeout_ms must be positive, got {r.redis_timeout_ms}")
        if not all(0 <= p <= 65535 for p in (s.port, self.metrics.port, s.agent_port)):
            raise ConfigError("ports must be within 0..65535")
        if s.drain_notice_s < 0:
            raise ConfigError(f"server.drain_notice_s must not be negative, got {s.drain_notice_s}")
        try:
            proxy_networks(s.proxy_protocol_from)
        except ValueError as e:
            raise ConfigError(f"server.proxy_protocol_from: {e}") from None
        v = self.revocation
        if v.source_url:
            if v.snapshot or v.deltas:
                raise ConfigError(
                    "revocation.source_url and revocation.snapshot/deltas: one source or the other"
                )
            if not v.source_url.startswith(("http://", "https://")):
                raise ConfigError(
                    "revocation.source_url must be an http:// or https:// URL, "
                    f"not {v.source_url!r}"
                )
            if not v.sync_dir:
                raise ConfigError(
                    "revocation.source_url needs revocation.sync_dir (where the fetched files go)"
                )
            if v.poll_interval_s <= 0 or v.source_timeout_s <= 0:
                raise ConfigError(
                    "revocation.poll_interval_s and revocation.source_timeout_s must be positive"
                )
        if not self.trust.trust_list or not self.trust.root_public_key:
            raise ConfigError("trust.trust_list and trust.root_public_key are required")
        if bool(s.tls_cert) != bool(s.tls_key):
            raise ConfigError("server.tls_cert and server.tls_key go together")
        if s.tls_client_ca and not s.tls_cert:
            raise ConfigError("server.tls_client_ca needs server.tls_cert and server.tls_key")
        if self.log.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(
                f"log.level must be debug, info, warning or error, not {self.log.level!r}"
            )
        return self


def load(
    path: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Sequence[tuple[str, str]] = (),
) -> Config:
    """Defaults, then the TOML file at ``path``, then ESSC_* variables, then overrides."""
    cfg = Config()
    if path:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        for section, values in doc.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: {section!r} must be a [section]")
            for key, value in values.items():
                cfg.set(f"{section}.{key}", value, path)
    env = os.environ if environ is None else environ
    for name, value in sorted(env.items()):
        if name.startswith("ESSC_") and name not in NOT_SETTINGS:
            section, _, key = name[5:].lower().partition("_")
            cfg.set(f"{section}.{key}", value, f"environment {name}")
    for dotted, value in overrides:
        cfg.set(dotted, value, f"--set {dotted}")
    return cfg


def _coerce(kind: Any, value: Any, where: str) -> Any:
    """Values from TOML arrive typed; from the environment and flags, as strings."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value, 0)
            except ValueError:
                pass
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(kind) is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        if isinstance(value, str):
            return [v for v in value.split(",") if v]
    raise ConfigError(f"{where}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
