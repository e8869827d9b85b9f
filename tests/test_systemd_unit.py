"""The shipped unit (deploy/systemd/essc-engine.service): the engine serves under its
sandbox's kernel-side restrictions (tests/sandbox.py: the system call filter, the
address families, no writable executable memory), and those restrictions are in force.

``make check-unit`` (scripts/check-systemd-unit.sh) checks the file itself with
``systemd-analyze verify`` and ``security``; this runs the engine under what the
file says.  Both need systemd-analyze (Debian package systemd): skipped without it,
failed under CI (``CI=true``).
"""

from __future__ import annotations

import asyncio
import ctypes.util
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from revocation_helpers import snapshot
from test_notify import DEADLINE_S, Engine, Manager

from engine.revocation.build import Signer
from engine.tools.pki import init
from engine.tools.processes import free_port
from engine.tools.scenarios import Scenarios
from engine.verdicts import Verdict
from engine.wire.client import Client

ROOT = pathlib.Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "essc-engine.service"
SANDBOX = [sys.executable, str(ROOT / "tests" / "sandbox.py"), str(UNIT), "--"]


@pytest.fixture(autouse=True)
def sandbox_tools():
    missing = []
    if shutil.which("systemd-analyze") is None:
        missing.append("systemd-analyze (Debian package systemd)")
    if ctypes.util.find_library("seccomp") is None:
        missing.append("libseccomp (Debian package libseccomp2)")
    if missing:
        why = f"{' and '.join(missing)} not installed; scripts/require-packages.sh installs them"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


CONTROL = """
import errno, mmap, os, socket
def outcome(f):
    try:
        f()
    except OSError as e:
        return errno.errorcode[e.errno]
    return "allowed"
print(outcome(lambda: mmap.mmap(-1, 4096, prot=7)))  # read, write and execute
print(outcome(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)))
print(outcome(lambda: os.sched_setaffinity(0, {0})))  # @resources
print(outcome(lambda: os.chown(os.devnull, 0, 0)))  # @privileged
"""


def test_the_sandbox_is_in_force():
    out = subprocess.run(
        [*SANDBOX, sys.executable, "-c", CONTROL],
        capture_output=True,
        text=True,
        check=True,
        timeout=DEADLINE_S,
    )
    assert out.stdout.split() == ["EACCES", "EAFNOSUPPORT", "EPERM", "EPERM"], out.stderr
    assert "MemoryDenyWriteExecute, RestrictAddressFamilies, SystemCallFilter" in out.stderr


def test_the_engine_serves_in_the_units_sandbox(tmp_path):
    """A supervised engine with signed revocation data, as the unit runs it (the private
    copies in a directory of its own, as RuntimeDirectory= gives it): it verifies
    (native core, libsodium, numpy), reloads, serves metrics and drains."""
    own = init(tmp_path / "pki")
    now_s = int(time.time())
    scenarios = Scenarios(own, now_s)
    signer = Signer.from_file(own.publisher_key_path)
    cards = sorted(scenarios.revoked_cards)
    snap = snapshot(tmp_path, "rev.snap", cards=cards, signer=signer, sequence=1)
    private = tmp_path / "run"
    metrics_port = free_port()
    manager = Manager(str(tmp_path / "notify.sock"))
    env = {"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "10000000"}
    engine = Engine(
        own,
        tmp_path,
        env,
        processes=2,
        wrapper=SANDBOX,
        metrics_port=metrics_port,
        more=f'[revocation]\nsnapshot = "{snap}"\nprivate_dir = "{private}"\n',
    )
    try:
        ((ready, _),) = manager.wait("READY")[-1:]
        assert ready["STATUS"].startswith("serving 2/2 workers: trust list 1, revocation 1,")

        async def verify() -> list[Verdict]:
            client = await Client.connect("127.0.0.1", engine.port)
            try:
                wanted = [Verdict.OK, Verdict.CARD_REVOKED, Verdict.BAD_HOLDER_SIGNATURE]
                presented = scenarios.presentations(wanted, int(time.time() * 1000))
                return [(await client.verify(p)).verdict for p in presented]
            finally:
                await client.close()

        verdicts = asyncio.run(asyncio.wait_for(verify(), DEADLINE_S))
        assert verdicts == [Verdict.OK, Verdict.CARD_REVOKED, Verdict.BAD_HOLDER_SIGNATURE]

        snapshot(tmp_path, "rev.snap", cards=cards, signer=signer, sequence=2)
        engine.signal(signal.SIGHUP)
        ((done, _),) = manager.wait("READY")[-1:]
        assert "revocation 2," in done["STATUS"]

        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=DEADLINE_S) as response:
            text = response.read().decode()
        assert 'essc_event_loop_lag_seconds_count{worker="1"}' in text

        engine.signal(signal.SIGTERM)
        assert engine.proc.wait(DEADLINE_S) == 0
        applied = [e["line"] for e in engine.log if e.get("line", "").startswith("sandbox:")]
        assert applied and "SystemCallFilter" in applied[0]
        failures = [e for e in engine.log if e.get("level") in ("error", "critical")]
        assert not failures, json.dumps(failures)
    finally:
        engine.stop()
        manager.close()
