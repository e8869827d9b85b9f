"""A real HAProxy for the fleet's tests, running the shipped deploy/haproxy.cfg.

The configuration is not copied or rewritten: its addresses come from FLEET_*
environment variables (its ``presetenv`` defaults give way to them), so what the tests
run is byte for byte what ops deploy.  HAProxy runs in the foreground (``-db``) on
free loopback ports with its stats socket in the test's directory, and is always
stopped (``haproxy()`` is a context manager).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import pathlib
import socket
import subprocess
from collections.abc import Iterator, Sequence

from realservers import free_port, port_open, require_program, wait_for

CONFIG = pathlib.Path(__file__).resolve().parent.parent / "deploy" / "haproxy.cfg"
BACKEND = "essc"
SERVERS = ("e1", "e2", "e3")  # the backend's servers, in the file's order


def check_config(env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``haproxy -c`` on the shipped file."""
    return subprocess.run(
        [require_program("haproxy"), "-c", "-f", str(CONFIG)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=30,
    )


class HAProxy:
    """``engines``: (port, agent port) of e1, e2, e3 (missing ones: a free port with
    nothing behind it, which the health check marks DOWN)."""

    def __init__(
        self,
        workdir: pathlib.Path,
        engines: Sequence[tuple[int, int]],
        *,
        check_inter: str = "200ms",
        agent_inter: str = "100ms",
    ):
        self.binary = require_program("haproxy")
        self.workdir = workdir
        self.port = free_port()
        self.socket_path = workdir / "haproxy.sock"
        self.log_path = workdir / "haproxy.log"
        engines = list(engines) + [(free_port(), free_port()) for _ in SERVERS[len(engines) :]]
        self.env = {
            "FLEET_BIND": f"127.0.0.1:{self.port}",
            "FLEET_STATS_SOCKET": str(self.socket_path),
            "FLEET_CHECK_INTER": check_inter,
            "FLEET_AGENT_INTER": agent_inter,
        }
        for name, (port, agent) in zip(SERVERS, engines):
            self.env[f"FLEET_{name.upper()}"] = f"127.0.0.1:{port}"
            self.env[f"FLEET_{name.upper()}_AGENT"] = str(agent)
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def start(self) -> HAProxy:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-db", "-f", str(CONFIG)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, **self.env},
            )
        wait_for(self._ready, what=f"haproxy on port {self.port}")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"haproxy exited with {self.proc.returncode}: {self.log()}")
        return self.socket_path.exists() and port_open(self.port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def command(self, line: str) -> str:
        """One command on the stats socket (the socket closes after the answer)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def stats(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the backend's servers, by name (status: UP, DOWN, DRAIN, ...)."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {r["svname"]: r for r in rows if r["pxname"] == BACKEND and r["svname"] in SERVERS}

    def status(self) -> dict[str, str]:
        return {name: row["status"] for name, row in self.stats().items()}

    def wait_status(self, want: dict[str, str], timeout: float = 20.0) -> None:
        """Until every server named in ``want`` has that status (a prefix: "DOWN"
        matches "DOWN 1/2")."""
        seen: dict[str, str] = {}

        def ok() -> bool:
            seen.update(self.status())
            return all(seen.get(k, "").startswith(v) for k, v in want.items())

        wait_for(ok, timeout=timeout, interval=0.05, what=f"haproxy status {want} (last: {seen})")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


@contextlib.contextmanager
def haproxy(
    workdir: pathlib.Path, engines: Sequence[tuple[int, int]], **kw: str
) -> Iterator[HAProxy]:
    proxy = HAProxy(workdir, engines, **kw)
    try:
        yield proxy.start()
    finally:
        proxy.stop()
