"""Redis's wire protocol (RESP2) for the replay store: commands packed by hand, replies
parsed by hiredis, over one blocking socket per verification thread.

The replay stage runs in a verification thread, never on the event loop, so a store
round trip blocks only that thread (with the GIL released in the socket calls); a
blocking socket with a deadline is both the fastest client here and the one whose
failures are the simplest to reason about.  Packing is a bytes join per command
(redis-py's pipeline builds objects per command and was Python-bound at about a
third of this speed: docs/BENCHMARKS.md, "Fleet: the shared replay store").

Every call takes an absolute deadline (``time.monotonic()``): a server that does not
answer in time, closes, resets or says anything hiredis cannot parse makes the call
raise ``StoreFailure``, and the connection is dead from then on (a reply stream that
lost its place cannot be trusted again).
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
import struct
import time
import urllib.parse
from collections.abc import Sequence

import hiredis

from engine.errors import EsscError


class StoreFailure(EsscError):
    """The store could not be asked: ``kind`` says why (for the errors metric)."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class ReplyError(Exception):
    """An error reply (hiredis returns these as values, in their place in the stream)."""


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where a Redis server is: TCP host and port, or a Unix socket path."""

    host: str = ""
    port: int = 6379
    path: str = ""  # unix socket
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @property
    def address(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"


def parse_url(url: str) -> Endpoint:
    """``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) or
    ``unix://path[?db=N]``; ValueError with the reason otherwise."""
    u = urllib.parse.urlsplit(url)
    user = urllib.parse.unquote(u.username) if u.username else None
    password = urllib.parse.unquote(u.password) if u.password else None
    if u.scheme == "unix":
        path = u.path or u.netloc
        if not path:
            raise ValueError(f"{url!r}: a unix:// URL needs a socket path")
        query = urllib.parse.parse_qs(u.query)
        db = int(query.get("db", ["0"])[0])
        return Endpoint(path=path, db=db, username=user, password=password)
    if u.scheme not in ("redis", "rediss"):
        raise ValueError(f"{url!r}: expected redis://, rediss:// or unix://")
    if not u.hostname:
        raise ValueError(f"{url!r}: no host")
    db_text = u.path.lstrip("/")
    if db_text and not db_text.isdigit():
        raise ValueError(f"{url!r}: the database must be a number, not {db_text!r}")
    return Endpoint(
        host=u.hostname,
        port=u.port or 6379,
        db=int(db_text or 0),
        tls=u.scheme == "rediss",
        username=user,
        password=password,
    )


def parse_address(text: str) -> Endpoint:
    """``HOST:PORT`` (a cluster seed); ``[v6]:PORT`` for IPv6."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{text!r}: expected HOST:PORT")
    return Endpoint(host=host.strip("[]"), port=int(port))


def pack(*args: bytes) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Connection:
    """One blocking connection to one server.  Not thread-safe: one per thread."""

    def __init__(
        self, endpoint: Endpoint, tls: ssl.SSLContext | None = None, io_timeout_s: float = 0.0
    ):
        """``io_timeout_s`` > 0 (plain TCP and Unix sockets): the socket blocks in the
        kernel, bounded by SO_SNDTIMEO / SO_RCVTIMEO, instead of Python's poll before
        every send and recv: two system calls a round trip instead of four, which on a
        virtual machine is most of a small batch's cost.  The deadline is then checked
        after each call, so a round trip ends within its deadline plus one
        ``io_timeout_s`` at worst."""
        self.endpoint = endpoint
        self._tls = tls
        self._io_timeout_s = 0.0 if endpoint.tls else io_timeout_s
        self._sock: socket.socket | None = None
        self._reader = hiredis.Reader(replyError=ReplyError)
        self.run_id = ""
        self.version: tuple[int, ...] = ()
        self.info: dict[str, str] = {}  # INFO server and memory, as read at connect
        self.generation = 0  # its master's failure count when it was made (the store's)
        self.fresh = True  # made, not used for a round trip yet (the store's)

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self, deadline: float) -> None:
        """Connects, authenticates, selects the database, and reads the server's run id
        and version (a new run id is how a restarted server is recognised)."""
        e = self.endpoint
        try:
            if e.path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(_remaining(deadline))
                sock.connect(e.path)
            else:
                sock = socket.create_connection((e.host, e.port), timeout=_remaining(deadline))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if e.tls:
                ctx = self._tls or ssl.create_default_context()
                sock = ctx.wrap_socket(sock, server_hostname=e.host or None)
        except TimeoutError:
            raise StoreFailure("timeout", f"{e.address}: connect timed out") from None
        except (OSError, ssl.SSLError) as err:
            raise StoreFailure("connect", f"{e.address}: {err}") from None
        if self._io_timeout_s > 0:
            sock.settimeout(None)
            tv = struct.pack("ll", int(self._io_timeout_s), int(self._io_timeout_s % 1 * 1e6) or 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        self._sock = sock
        self._reader = hiredis.Reader(replyError=ReplyError)
        setup = []
        if e.password is not None:
            auth = [b"AUTH"] + ([e.username.encode()] if e.username else [])
            setup.append(pack(*auth, e.password.encode()))
        if e.db:
            setup.append(pack(b"SELECT", b"%d" % e.db))
        setup.append(pack(b"INFO", b"server", b"memory"))
        replies = self.call(b"".join(setup), len(setup), deadline)
        for reply in replies[:-1]:
            if isinstance(reply, ReplyError):
                self.close()
                raise StoreFailure("auth", f"{e.address}: {reply}")
        info = replies[-1]
        if not isinstance(info, bytes):
            self.close()
            raise StoreFailure("protocol", f"{e.address}: INFO answered {info!r}")
        fields = dict(
            line.split(":", 1)
            for line in info.decode("ascii", "replace").splitlines()
            if ":" in line
        )
        self.info = fields
        self.run_id = fields.get("run_id", "")
        self.version = tuple(int(x) for x in fields.get("redis_version", "0").split(".")[:2])

    def call(self, commands: bytes, replies: int, deadline: float) -> list[object]:
        """Sends packed commands and reads ``replies`` replies (error replies included,
        as ReplyError values); StoreFailure, and the connection closed, otherwise."""
        self.send(commands, deadline)
        return self.receive(replies, deadline)

    def send(self, commands: bytes, deadline: float) -> None:
        sock = self._require()
        try:
            if self._io_timeout_s > 0:
                _remaining(deadline)
            else:
                sock.settimeout(_remaining(deadline))
            sock.sendall(commands)
        except Exception as err:
            raise self._fail(err) from None

    def receive(self, replies: int, deadline: float) -> list[object]:
        sock = self._require()
        out: list[object] = []
        append, gets, feed = out.append, self._reader.gets, self._reader.feed
        need = replies
        try:
            while need:
                reply = gets()
                if reply is not False:
                    append(reply)
                    need -= 1
                    continue
                if self._io_timeout_s > 0:
                    data = sock.recv(1 << 16)
                    _remaining(deadline)
                else:
                    sock.settimeout(_remaining(deadline))
                    data = sock.recv(1 << 16)
                if not data:
                    raise ConnectionError("closed by the server")
                feed(data)
        except Exception as err:
            raise self._fail(err) from None
        return out

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _require(self) -> socket.socket:
        if self._sock is None:
            raise StoreFailure("closed", f"{self.endpoint.address}: not connected")
        return self._sock

    def _fail(self, err: BaseException) -> StoreFailure:
        self.close()
        address = self.endpoint.address
        if isinstance(err, StoreFailure):
            return err
        if isinstance(err, (TimeoutError, BlockingIOError)):  # BlockingIOError: SO_RCVTIMEO
            return StoreFailure("timeout", f"{address}: no answer in time")
        if isinstance(err, hiredis.ProtocolError):
            return StoreFailure("protocol", f"{address}: {err}")
        return StoreFailure("closed", f"{address}: {err}")


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError()
    return left


def replies_ok(replies: Sequence[object]) -> bool:
    return not any(isinstance(r, ReplyError) for r in replies)
