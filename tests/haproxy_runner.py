"""A real HAProxy for the fleet's tests, running the shipped deploy/haproxy.cfg.

The configuration is not copied or rewritten: its addresses come from FLEET_*
environment variables (its ``presetenv`` defaults give way to them), so what the tests
run is byte for byte what ops deploy.  HAProxy runs in the foreground (``-db``) on
free loopback ports with its stats socket in the test's directory, and is always
stopped (``haproxy()`` is a context manager).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
from collections.abc import Iterator, Sequence

from realservers import require_program

from engine.tools.haproxy_process import BACKEND, CONFIG, SERVERS, HAProxyProcess

__all__ = ["BACKEND", "CONFIG", "SERVERS", "HAProxy", "check_config", "haproxy"]


def check_config(env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``haproxy -c`` on the shipped file."""
    return subprocess.run(
        [require_program("haproxy"), "-c", "-f", str(CONFIG)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=30,
    )


class HAProxy(HAProxyProcess):
    """engine.tools.haproxy_process's HAProxy with the tests' short check intervals,
    skipped (failed under CI) where the machine has none."""

    def __init__(
        self,
        workdir: pathlib.Path,
        engines: Sequence[tuple[int, int]],
        *,
        check_inter: str = "200ms",
        agent_inter: str = "100ms",
    ):
        require_program("haproxy")
        super().__init__(workdir, engines, check_inter=check_inter, agent_inter=agent_inter)


@contextlib.contextmanager
def haproxy(
    workdir: pathlib.Path, engines: Sequence[tuple[int, int]], **kw: str
) -> Iterator[HAProxy]:
    proxy = HAProxy(workdir, engines, **kw)
    try:
        yield proxy.start()
    finally:
        proxy.stop()
