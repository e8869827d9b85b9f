"""Fresh presentations for a run, signed in worker processes and streamed to the driver.

A presentation is valid for about a minute and only once, so nothing can be signed
ahead of the run.  Each worker process loads its share of the corpus, and on
request signs a *chunk*: presentations of outcomes drawn by the run's mix, stamped
now, already wrapped in request frames, with the verdict each must draw.  The driver
keeps a small pool of chunks (a fraction of a second of sending) and asks for more
as it drains; a chunk that waited too long in the pool is thrown away rather than
sent stale.

The frames are complete except for the request id: each ends with the msgpack key
``"id"`` and a uint64 marker, and the driver appends the 8 id bytes when it sends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable

import msgpack
import numpy as np

from engine.errors import EsscError
from engine.tools.holder import HolderKeys, present_batch
from engine.tools.scenarios import presentation_time_ms, spoil_presentation
from engine.verdicts import Verdict
from engine.wire import protocol as proto
from engine.wire.framing import HEADER, FrameDecoder
from loadgen.corpus import OUTCOMES, Corpus

CHUNK_PRESENTATIONS = 256  # per native signing batch: big enough to amortise, small to stay fresh
ID_BYTES = 8

_packer = msgpack.Packer(use_bin_type=True)
_ID_SUFFIX = _packer.pack("id") + b"\xcf"  # uint64 marker; the 8 id bytes follow
_VERIFY = b"\x83" + _packer.pack("type") + _packer.pack(proto.VERIFY) + _packer.pack("presentation")
_BATCH = (
    b"\x83"
    + _packer.pack("type")
    + _packer.pack(proto.VERIFY_BATCH)
    + _packer.pack("presentations")
)


class GeneratorError(EsscError):
    """The generator itself failed (a signing worker could not start or died)."""


@dataclasses.dataclass
class Chunk:
    """Requests ready to send, each of ``batch`` presentations (item = one presentation)."""

    made_at: float  # unix time the presentations were stamped
    batch: int
    frames: list[bytes]  # one per request, without the trailing 8 id bytes
    expect: bytes  # per item: the verdict code it must draw
    outcome: bytes  # per item: index into the run's outcome names
    pair: list[int]  # per item: 0, or the id shared by a replayed presentation's two copies

    @property
    def presentations(self) -> int:
        return len(self.expect)


def frame_templates(presentations: list[bytes], batch: int) -> list[bytes]:
    """Request frames for consecutive groups of ``batch`` presentations (ids missing)."""
    out = []
    if batch == 1:
        for p in presentations:
            payload = _VERIFY + _packer.pack(p) + _ID_SUFFIX
            out.append(HEADER.pack(len(payload) + ID_BYTES) + payload)
        return out
    for k in range(0, len(presentations), batch):
        group = presentations[k : k + batch]
        payload = (
            _BATCH
            + _packer.pack_array_header(len(group))
            + b"".join(_packer.pack(p) for p in group)
            + _ID_SUFFIX
        )
        out.append(HEADER.pack(len(payload) + ID_BYTES) + payload)
    return out


class _Keys:
    """Holder secret keys in libsodium's form, as engine.tools.holder.HolderKeys holds them."""

    def __init__(self, secret_keys: list[bytes]):
        self.secret_keys = secret_keys


def _secret_key(wallet) -> bytes:
    """libsodium's Ed25519 secret key: the seed, then the public key.

    The public key is the credential's holder key, its last 32 body bytes (the body
    ends with that bin(32); then come c4 40 and the 64-byte issuer signature).  Taking
    it from there spares a scalar multiplication per holder, which for a million
    holders is most of a worker's start-up; it is checked against a full derivation
    the first time, in case the encoding ever changes.
    """
    public = wallet.credential[-98:-66]
    if not _secret_key.checked:
        (derived,) = HolderKeys([wallet.holder_seed]).secret_keys
        if derived != wallet.holder_seed + public:
            raise ValueError("credential layout changed: cannot take holder keys from it")
        _secret_key.checked = True
    return wallet.holder_seed + public


_secret_key.checked = False


class ChunkMaker:
    """Signs chunks from (this worker's share of) the corpus; runs in a worker process."""

    def __init__(
        self,
        corpus: Corpus,
        weights: dict[str, float],
        batch: int,
        *,
        share: tuple[int, int] = (0, 1),
        chunk_presentations: int = CHUNK_PRESENTATIONS,
        pair_base: int = 0,
    ):
        self.names = list(weights)
        self.batch = batch
        # Whole requests per chunk, at least one.
        self.slots = max(batch, chunk_presentations // batch * batch)
        self.freshness_ms = corpus.freshness_ms
        p = np.array([weights[n] for n in self.names], dtype=float)
        self.p = p / p.sum()
        self.verdicts = [OUTCOMES[n] for n in self.names]
        self.expect = [int(corpus.outcome(n).expect) for n in self.names]
        index, total = share
        credentials: list[bytes] = []
        secret_keys: list[bytes] = []
        self.first: list[int] = []
        self.count: list[int] = []
        for name in self.names:
            size = corpus.outcome(name).cards
            # Split big groups between the workers; small ones are shared whole.
            step, start = (total, index) if size >= total else (1, 0)
            self.first.append(len(credentials))
            for k, w in enumerate(corpus.wallets(name)):
                if k % step == start:
                    credentials.append(w.credential)
                    secret_keys.append(_secret_key(w))
            self.count.append(len(credentials) - self.first[-1])
        self.credentials = credentials
        self.keys = _Keys(secret_keys)
        self.rng = np.random.default_rng()
        self.next_pair = pair_base
        self.replayed = (
            self.names.index("replayed") if "replayed" in self.names else -1
        )  # its items go out twice

    def make(self) -> Chunk:
        slots = self.slots
        draws = self.rng.choice(len(self.names), size=slots, p=self.p)
        # One signed presentation per draw; a replayed draw fills two slots.
        kinds: list[int] = []
        copies: list[int] = []
        used = 0
        for d in draws.tolist():
            if used == slots:
                break
            n = 2 if d == self.replayed and used + 2 <= slots else 1
            kinds.append(d)
            copies.append(n)
            used += n
        while used < slots:  # the draws ran out on replay pairs: top up with singles
            kinds.append(int(self.rng.choice(len(self.names), p=self.p)))
            copies.append(1)
            used += 1
        picks = self.rng.random(len(kinds))
        now_ms = int(time.time() * 1000)
        indices, stamps = [], []
        for k, pick in zip(kinds, picks.tolist()):
            indices.append(self.first[k] + int(pick * self.count[k]))
            stamps.append(presentation_time_ms(self.verdicts[k], now_ms, self.freshness_ms))
        signed = present_batch(
            self.credentials, self.keys, indices, stamps, [3] * len(indices), threads=1
        )
        presentations: list[bytes] = []
        expect = bytearray()
        outcome = bytearray()
        pair: list[int] = []
        for k, n, data in zip(kinds, copies, signed):
            data = spoil_presentation(self.verdicts[k], data)
            if n == 2:
                self.next_pair += 1
                presentations += (data, data)
                expect += bytes((Verdict.OK, Verdict.REPLAYED))
                outcome += bytes((k, k))
                pair += (self.next_pair, self.next_pair)
            else:
                presentations.append(data)
                # A replayed holder's presentation sent once is simply valid.
                expect.append(Verdict.OK if k == self.replayed else self.expect[k])
                outcome.append(k)
                pair.append(0)
        return Chunk(
            now_ms / 1000,
            self.batch,
            frame_templates(presentations, self.batch),
            bytes(expect),
            bytes(outcome),
            pair,
        )


# Between the driver and a worker: a socket pair with our own framing
# (engine.wire.framing), read from the driver's event loop without blocking.
# Driver -> worker: a uint32 count of chunks wanted (0: stop).  Worker -> driver:
# frames each holding a pickled Chunk; the first says "ready" or why it failed.
_CREDIT = struct.Struct(">I")


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = sock.recv(n - len(data))
        if not more:
            raise EOFError
        data += more
    return data


def _send_obj(sock: socket.socket, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(HEADER.pack(len(data)) + data)


def worker_main(fd: int, config: dict) -> None:
    """A signing worker: sign a chunk for every credit received, until told to stop."""
    # Ctrl-C reaches the whole process group: the driver decides, and stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    try:
        share = tuple(config["share"])
        maker = ChunkMaker(
            Corpus.open(config["corpus"]),
            config["weights"],
            config["batch"],
            share=share,
            chunk_presentations=config["chunk_presentations"],
            pair_base=(share[0] + 1) << 48,  # pair ids unique across workers
        )
    except Exception as e:
        _send_obj(sock, f"failed: {e!r}")
        return
    _send_obj(sock, "ready")
    with contextlib.suppress(EOFError, OSError):
        while True:
            (credits,) = _CREDIT.unpack(_recv_exactly(sock, _CREDIT.size))
            if credits == 0:
                break
            for _ in range(credits):
                _send_obj(sock, maker.make())


def _worker_entry() -> None:  # python -c: argv[1] the socket's fd, argv[2] the config
    worker_main(int(sys.argv[1]), json.loads(sys.argv[2]))


class Source:
    """The signing worker processes and the driver's side of their sockets."""

    def __init__(
        self,
        corpus: Corpus,
        weights: dict[str, float],
        batch: int,
        *,
        workers: int = 1,
        chunk_presentations: int = CHUNK_PRESENTATIONS,
    ):
        self.corpus = corpus
        self.names = list(weights)
        self.batch = batch
        self.requests_per_chunk = max(1, chunk_presentations // batch)
        # Plain child processes (not multiprocessing): nothing of the caller's main
        # module or threads is inherited or re-imported.
        env = dict(os.environ)
        root = str(pathlib.Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._socks: list[socket.socket] = []
        self._procs: list[subprocess.Popen] = []
        for w in range(workers):
            ours, theirs = socket.socketpair()
            config = {
                "corpus": str(corpus.directory),
                "weights": weights,
                "batch": batch,
                "share": [w, workers],
                "chunk_presentations": chunk_presentations,
            }
            cmd = [
                sys.executable,
                "-c",
                "from loadgen.sources import _worker_entry; _worker_entry()",
                str(theirs.fileno()),
                json.dumps(config),
            ]
            proc = subprocess.Popen(
                cmd, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env
            )
            theirs.close()
            self._socks.append(ours)
            self._procs.append(proc)
        self._decoders = [FrameDecoder(1 << 31) for _ in range(workers)]
        self.outstanding = [0] * workers  # chunks asked for and not yet received
        self.asked = 0  # chunks asked for in all
        self._on_chunk: Callable[[Chunk], None] | None = None
        self._on_error: Callable[[str], None] | None = None
        self._loop = None

    @property
    def workers(self) -> int:
        return len(self._procs)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Blocks until every worker has loaded its share of the corpus."""
        for w, sock in enumerate(self._socks):
            sock.settimeout(timeout)
            try:
                (size,) = HEADER.unpack(_recv_exactly(sock, HEADER.size))
                answer = pickle.loads(_recv_exactly(sock, size))
            except (OSError, EOFError):
                answer = f"exited with code {self._procs[w].poll()}"
            sock.settimeout(None)
            if answer != "ready":
                raise GeneratorError(f"signing worker {w} did not start: {answer}")

    def attach(
        self, loop, on_chunk: Callable[[Chunk], None], on_error: Callable[[str], None]
    ) -> None:
        """Delivers chunks to ``on_chunk`` from ``loop`` as they arrive; a worker that
        dies is reported to ``on_error``."""
        self._loop = loop
        self._on_chunk = on_chunk
        self._on_error = on_error
        for w, sock in enumerate(self._socks):
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._readable, w)

    def detach(self) -> None:
        if self._loop is not None:
            for sock in self._socks:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(sock.fileno())
            self._loop = None

    def _readable(self, w: int) -> None:
        try:
            data = self._socks[w].recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.detach()
            self._on_error(f"signing worker {w} exited (exit code {self._procs[w].poll()})")
            return
        for payload in self._decoders[w].feed(data):
            self.outstanding[w] -= 1
            self._on_chunk(pickle.loads(payload))

    def ask(self, chunks: int) -> None:
        """Asks the workers for ``chunks`` more chunks, the least loaded first."""
        per = [0] * self.workers
        for _ in range(chunks):
            w = min(range(self.workers), key=lambda i: self.outstanding[i] + per[i])
            per[w] += 1
        self.asked += chunks
        for w, n in enumerate(per):
            if n:
                self.outstanding[w] += n
                self._send_credit(w, n)

    def _send_credit(self, w: int, n: int) -> None:
        sock = self._socks[w]
        blocking = sock.getblocking()
        sock.setblocking(True)  # four bytes; the worker reads them between chunks
        try:
            sock.sendall(_CREDIT.pack(n))
        finally:
            sock.setblocking(blocking)

    @property
    def pending(self) -> int:
        return sum(self.outstanding)

    def close(self) -> None:
        self.detach()
        for w, sock in enumerate(self._socks):
            with contextlib.suppress(OSError):
                self._send_credit(w, 0)
                # Take what it is still sending, or it stays blocked on a full socket.
                sock.settimeout(5)
                while sock.recv(1 << 20):
                    pass
        for proc in self._procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for sock in self._socks:
            sock.close()


def default_workers() -> int:
    return max(1, (os.cpu_count() or 2) // 2)
