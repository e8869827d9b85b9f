"""Running the server inside the test process, on 127.0.0.1 and a free port."""

from __future__ import annotations

import asyncio
import logging
import threading

import uvloop

from engine.server.config import Config
from engine.server.logs import LOGGER
from engine.server.server import Server


def server_config(pki, **settings) -> Config:
    """Loopback, any free port, no metrics port; ``settings`` as {"section.key": value}."""
    cfg = Config()
    cfg.server.port = 0
    cfg.metrics.port = 0
    cfg.trust.trust_list = str(pki.trust_list_path)
    cfg.trust.root_public_key = pki.root_public_key.hex()
    for dotted, value in settings.items():
        cfg.set(dotted, value, "test")
    return cfg


# The event loops the server runs on (engine.server.server.run: uvloop where it is
# installed, the standard loop otherwise), by name.
LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


# How to start the engine's command line in a subprocess on each event loop: on the
# standard loop with uvloop made unimportable, which is how engine.server.server.run
# finds a host without it.
ENGINE_ON = {
    "uvloop": ["-m", "engine"],
    "asyncio": [
        "-c",
        "import sys; sys.modules['uvloop'] = None; "
        "from engine.cli.main import main; sys.exit(main())",
    ],
}


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    return LOOPS[name]()


class ServerThread:
    """A Server on its own event loop (``loop``: a name in LOOPS) in a background
    thread; ``stop()`` drains it."""

    def __init__(self, cfg: Config, *, loop: str = "uvloop", **server_kwargs):
        self.server = Server(cfg, **server_kwargs)
        self.loop_name = loop
        self.loop = new_loop(loop)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="essc-test-server", daemon=True)
        self.thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_until_complete(self.server.wait_stopped())
        self.loop.close()

    @property
    def port(self) -> int:
        return self.server.port

    def call(self, coro, timeout: float = 30):
        """Runs a coroutine on the server's loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        # A server the test drained itself ends its thread on its own (its loop may be
        # closing already, and would never run another drain).
        if self.thread.is_alive() and not self.server.draining:
            self.call(self.server.drain())
        self.thread.join(30)


class LogEvents(logging.Handler):
    """Collects the server's log events (the ``essc`` logger) as they happen, so a test
    can wait for one instead of sleeping:

        with LogEvents() as log:
            ...
            log.wait("tls_handshake_failed", count=3)
    """

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.events: list[dict] = []
        self._cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._cond:
            self.events.append({"event": record.getMessage(), **getattr(record, "fields", {})})
            self._cond.notify_all()

    def named(self, name: str) -> list[dict]:
        with self._cond:
            return [e for e in self.events if e["event"] == name]

    def wait(self, name: str, count: int = 1, timeout: float = 30) -> list[dict]:
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.named(name)) >= count, timeout)
        assert ok, f"{count} {name!r} events expected, got {self.named(name)}"
        return self.named(name)

    def __enter__(self) -> LogEvents:
        logger = logging.getLogger(LOGGER)
        self._level = logger.level
        logger.addHandler(self)
        logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc) -> None:
        logger = logging.getLogger(LOGGER)
        logger.removeHandler(self)
        logger.setLevel(self._level)


def closed_by_peer(sock, timeout: float | None = None) -> bool:
    """Reads until the server closes or resets the connection (True) or the socket's
    timeout (or ``timeout``) passes without data (False)."""
    if timeout is not None:
        sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True
