"""Runs a command under the kernel-side restrictions of a systemd unit file, without
systemd: the ones that can break a program rather than hide files from it.

    python tests/sandbox.py deploy/systemd/essc-engine.service -- COMMAND...

- ``SystemCallFilter=`` (an allow list, then ``~`` lists taken out of it) with
  ``SystemCallErrorNumber=``: a seccomp filter made with libseccomp, as systemd makes
  it, the groups expanded by ``systemd-analyze syscall-filter`` (so a group means what
  the installed systemd says it means); ``SystemCallArchitectures=native`` is
  libseccomp's default;
- ``RestrictAddressFamilies=``: ``socket(2)`` of any other family fails with
  EAFNOSUPPORT, as under systemd (``socketpair`` is not covered, as under systemd);
- ``MemoryDenyWriteExecute=``: the kernel's ``PR_SET_MDWE`` (what systemd 253+ uses;
  252 loads an equivalent seccomp filter): no mapping both writable and executable,
  none made executable later;
- ``NoNewPrivileges=``.

What it does not do: the mount namespace (``ProtectSystem=``, ``PrivateTmp=``,
``ProtectHome=``, ...), users, capabilities, ``ProcSubset=``.  tests/test_systemd_unit.py
runs the engine under it; docs/DEPLOYMENT.md ("Running the engine under systemd")
says what is and is not checked.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import subprocess
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_GT = 6
PR_SET_NO_NEW_PRIVS = 38
PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
AF_MAX = 46  # Linux 6.x; families above it are refused too


def scmp_act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class ArgCmp(ctypes.Structure):  # struct scmp_arg_cmp
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def unit_settings(path: str) -> dict[str, list[str]]:
    """The [Service] assignments of a unit file, every value of a repeated key kept."""
    settings: dict[str, list[str]] = {}
    section = ""
    with open(path, encoding="utf-8") as lines:
        text = lines.read()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]" and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def expand(group: str, seen: set[str] | None = None) -> set[str]:
    """The system calls a name stands for (a @group, recursively, or one call)."""
    if not group.startswith("@"):
        return {group}
    seen = set() if seen is None else seen
    if group in seen:
        return set()
    seen.add(group)
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", group], capture_output=True, text=True, check=True
    ).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        name = line.strip()
        if name and not name.startswith("#"):
            calls |= expand(name, seen)
    return calls


def allowed_calls(filters: list[str]) -> set[str]:
    """systemd's reading of SystemCallFilter= lines: the first one an allow list, each
    ``~`` line taken out of it."""
    allowed: set[str] | None = None
    for value in filters:
        deny = value.startswith("~")
        names = value.lstrip("~").split()
        calls = set().union(*(expand(n) for n in names)) if names else set()
        if allowed is None:
            if deny:
                raise SystemExit("sandbox.py: only an allow list first is supported")
            allowed = calls
        elif deny:
            allowed -= calls
        else:
            allowed |= calls
    return allowed or set()


def _libseccomp() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ArgCmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    return lib


def _rule(lib: ctypes.CDLL, ctx: int, action: int, call: int, *cmps: ArgCmp) -> None:
    array = (ArgCmp * len(cmps))(*cmps) if cmps else None
    rc = lib.seccomp_rule_add_array(ctx, action, call, len(cmps), array)
    if rc < 0:
        raise OSError(-rc, f"seccomp_rule_add_array({call}): {os.strerror(-rc)}")


def _load(lib: ctypes.CDLL, ctx: int) -> None:
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")


def apply(unit: str) -> list[str]:
    """Applies the unit's restrictions to this process; returns what was applied."""
    s = unit_settings(unit)
    libc = ctypes.CDLL(None, use_errno=True)
    done = []
    if s.get("NoNewPrivileges", ["no"])[-1] == "yes":
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        done.append("NoNewPrivileges")
    if s.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes":
        if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_MDWE (Linux 6.3+) refused")
        done.append("MemoryDenyWriteExecute")
    lib = _libseccomp()
    # The families first: the call filter does not let another filter be loaded.
    if "RestrictAddressFamilies" in s:
        families = {
            int(getattr(socket, f)) for v in s["RestrictAddressFamilies"] for f in v.split()
        }
        ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
        refuse = scmp_act_errno(errno.EAFNOSUPPORT)
        call = lib.seccomp_syscall_resolve_name(b"socket")
        for family in range(AF_MAX + 1):
            if family not in families:
                _rule(lib, ctx, refuse, call, ArgCmp(0, SCMP_CMP_EQ, family, 0))
        _rule(lib, ctx, refuse, call, ArgCmp(0, SCMP_CMP_GT, AF_MAX, 0))
        _load(lib, ctx)
        done.append("RestrictAddressFamilies")
    if "SystemCallFilter" in s:
        code = s.get("SystemCallErrorNumber", ["EPERM"])[-1]
        ctx = lib.seccomp_init(scmp_act_errno(getattr(errno, code)))
        for name in sorted(allowed_calls(s["SystemCallFilter"])):
            call = lib.seccomp_syscall_resolve_name(name.encode())
            if call >= 0:  # < 0: not a call of this architecture (chown32, ...)
                _rule(lib, ctx, SCMP_ACT_ALLOW, call)
        _load(lib, ctx)
        done.append("SystemCallFilter")
    return done


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit("usage: sandbox.py UNIT -- COMMAND...")
    unit, command = argv[0], argv[2:]
    applied = apply(unit)
    print(f"sandbox: {', '.join(applied)}", file=sys.stderr, flush=True)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
