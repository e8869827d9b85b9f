"""HAProxy as a child process running the shipped deploy/haproxy.cfg, unchanged: its
addresses come from FLEET_* environment variables (the file's ``presetenv`` defaults
give way to them).  `make fleet` (engine/tools/fleet.py) and the tests
(tests/haproxy_runner.py) run the balancer through this module.
"""

from __future__ import annotations

import csv
import io
import os
import pathlib
import socket
import subprocess
from collections.abc import Sequence

from engine.tools.processes import (
    ProcessError,
    connects,
    die_with_parent,
    find_program,
    free_port,
    wait_until,
)

# deploy/haproxy.cfg of the source tree this module belongs to.
CONFIG = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"
BACKEND = "essc"
SERVERS = ("e1", "e2", "e3")  # the backend's servers, in the file's order


class HAProxyProcess:
    """HAProxy on ``host:port`` (None: a free one) in front of ``engines``: (port, agent
    port) of e1, e2, e3; missing ones get a free port with nothing behind it, which the
    health check marks DOWN.  Its admin socket is in ``workdir``."""

    def __init__(
        self,
        workdir: pathlib.Path,
        engines: Sequence[tuple[int, int]],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        check_inter: str = "1s",
        agent_inter: str = "500ms",
        config: pathlib.Path = CONFIG,
    ):
        if len(engines) > len(SERVERS):
            raise ProcessError(f"at most {len(SERVERS)} engines (deploy/haproxy.cfg's servers)")
        self.binary = find_program("haproxy")
        self.workdir = workdir
        self.host = host
        self.port = port or free_port(host)
        self.config = config
        self.socket_path = workdir / "haproxy.sock"
        self.log_path = workdir / "haproxy.log"
        engines = list(engines) + [(free_port(), free_port()) for _ in SERVERS[len(engines) :]]
        self.env = {
            "FLEET_BIND": f"{host}:{self.port}",
            "FLEET_STATS_SOCKET": str(self.socket_path),
            "FLEET_CHECK_INTER": check_inter,
            "FLEET_AGENT_INTER": agent_inter,
        }
        for name, (engine_port, agent) in zip(SERVERS, engines):
            self.env[f"FLEET_{name.upper()}"] = f"{host}:{engine_port}"
            self.env[f"FLEET_{name.upper()}_AGENT"] = str(agent)
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 20.0) -> HAProxyProcess:
        # A socket file left by an earlier run would look ready before HAProxy is.
        self.socket_path.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-db", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, **self.env},
                preexec_fn=die_with_parent,
            )
        wait_until(self._ready, timeout, f"haproxy on {self.host}:{self.port}")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ProcessError(f"haproxy exited with {self.proc.returncode}: {self.log()}")
        return self.socket_path.exists() and connects(self.host, self.port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def command(self, line: str) -> str:
        """One command on the admin socket (it closes after the answer)."""
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
            try:
                seen.update(self.status())
            except (ConnectionRefusedError, FileNotFoundError):
                return False  # the admin socket is not up yet (a start, a reload)
            return all(seen.get(k, "").startswith(v) for k, v in want.items())

        wait_until(ok, timeout, f"haproxy status {want} (last: {seen})")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
