"""Running the real servers a fleet is made of (redis-server, haproxy, engine nodes) as
child processes on this machine: finding the program, waiting for it, and making sure
it never outlives the process that started it.  Used by `make fleet`
(engine/tools/fleet.py), the fleet's tests and the benchmarks."""

from __future__ import annotations

import contextlib
import pathlib
import random
import shutil
import signal
import socket
import time
from collections.abc import Callable

from engine.errors import EsscError


class ProcessError(EsscError, RuntimeError):
    """A server did not start or stop as it should; the message says which and why."""


def find_program(name: str, package: str | None = None) -> str:
    """The path of ``name`` (PATH, then /usr/sbin and /usr/bin); ProcessError saying
    how to install it (Debian ``package``, where given) where it is missing."""
    path = shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin") if (p := pathlib.Path(d, name)).exists()),
        None,
    )
    if path is None and package is not None:
        raise ProcessError(
            f"{name} is not installed (Debian package {package}): "
            f"scripts/require-packages.sh {package} installs it (make packages runs it)"
        )
    if path is None:
        raise ProcessError(
            f"{name} is not installed: scripts/require-packages.sh redis-server haproxy "
            "installs it (make fleet runs it)"
        )
    return path


def wait_until(ok: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls ``ok`` until it holds (returning as soon as it does); ProcessError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise ProcessError(f"timed out waiting for {what}")
        time.sleep(0.02)


def family(host: str) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 literal such as "::1", else AF_INET."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(family(host)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports free now, for servers that bind them later: all held at once
    while they are chosen (so no two are the same), and below the kernel's ephemeral
    range (so an outgoing connection made meanwhile cannot take one)."""
    rng = random.Random()
    held: list[socket.socket] = []
    try:
        while len(held) < n:
            s = socket.socket()
            try:
                s.bind((host, rng.randrange(20000, 32000)))
            except OSError:
                s.close()
                continue
            held.append(s)
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for s in held:
            s.close()


def connects(host: str, port: int) -> bool:
    with socket.socket(family(host)) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def die_with_parent() -> None:
    """In a child before exec: SIGTERM when its parent dies, however it dies (Linux
    prctl PR_SET_PDEATHSIG), so no server outlives the fleet, test or bench."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
