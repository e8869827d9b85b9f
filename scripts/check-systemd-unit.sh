#!/usr/bin/env bash
# Checks the shipped systemd unit with systemd's own tools (`make check-unit`; CI):
#
# 1. systemd-analyze verify, on a copy whose ExecStart= names this checkout's console
#    script (.venv/bin/essc-engine, or ENGINE_BIN) instead of /opt/essc-engine/bin:
#    every line parses (an unknown key or a bad value, which systemd only warns about
#    and ignores, fails here), ExecStart=/ExecReload= name executables, the
#    dependencies load.  The ExecStart= command line itself, with the unit's
#    Environment=, runs `--check` against a fresh demo trust list: its arguments and
#    settings are ones `essc-engine serve` takes.
# 2. systemd-analyze security --offline=true on the unit as shipped: prints the
#    exposure score and what is left, fails above MAX_EXPOSURE (2.0).
# 3. The sysusers.d snippet (deploy/systemd/essc-engine.sysusers), dry-run in an empty
#    root, creates the User=/Group= the unit runs as.
#
# Not checked here: the sandbox at run time (that needs systemd as PID 1);
# tests/test_systemd_unit.py runs the engine under the unit's system call filter,
# address families and MemoryDenyWriteExecute.  docs/DEPLOYMENT.md, "Running the engine under systemd", has the details.
#
# systemd-analyze comes from the Debian package systemd, installed where missing
# (scripts/require-packages.sh).  Where it cannot be, this says so and exits 0
# (SKIPPED), or 1 under CI=true: CI must run this check.
set -euo pipefail
cd "$(dirname "$0")/.."

UNIT=deploy/systemd/essc-engine.service
SYSUSERS=deploy/systemd/essc-engine.sysusers
MAX_EXPOSURE=${MAX_EXPOSURE:-2.0}
ENGINE_BIN=${ENGINE_BIN:-$PWD/.venv/bin/essc-engine}

say() { echo "check-unit: $*" >&2; }
fail() {
    say "FAILED: $*"
    exit 1
}

if ! command -v systemd-analyze >/dev/null 2>&1; then
    if ! bash scripts/require-packages.sh systemd || ! command -v systemd-analyze >/dev/null 2>&1; then
        say "systemd-analyze is missing (Debian package systemd) and could not be installed"
        [ "${CI:-}" = true ] && fail "CI must run this check"
        say "SKIPPED"
        exit 0
    fi
fi
say "$(systemd-analyze --version | head -1)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. verify
[ -x "$ENGINE_BIN" ] || fail "$ENGINE_BIN is not executable: run 'make build', or set ENGINE_BIN"
exec_start=$(sed -n 's/^ExecStart=//p' "$UNIT")
[ -n "$exec_start" ] || fail "$UNIT has no ExecStart="
# The ExecStart= command line, its --config file replaced by one naming a fresh demo
# trust list, with the unit's Environment= (ESSC_* settings), passes `--check`: the
# arguments and the settings are ones the engine takes.
"$ENGINE_BIN" pki init "$tmp/pki" >/dev/null
key=$(sed -n 's/.*"public_key": "\([0-9a-f]*\)".*/\1/p' "$tmp/pki/root.pub")
printf '[server]\nport = 0\n[metrics]\nport = 0\n[trust]\nroot_public_key = "%s"\ntrust_list = "%s"\n' \
    "$key" "$tmp/pki/trustlist.essc" >"$tmp/engine.toml"
read -ra argv <<<"$exec_start"
argv[0]=$ENGINE_BIN
for i in "${!argv[@]}"; do
    [ "${argv[$i]}" = /etc/essc-engine/engine.toml ] && argv[$i]=$tmp/engine.toml
done
mapfile -t environment < <(sed -n 's/^Environment=//p' "$UNIT")
out=$(env "${environment[@]}" "${argv[@]}" --check 2>&1) ||
    fail "the ExecStart= command line (${argv[*]} --check) with Environment=${environment[*]}: $out"
sed "s#^ExecStart=[^ ]*#ExecStart=$ENGINE_BIN#" "$UNIT" >"$tmp/essc-engine.service"
rc=0
out=$(systemd-analyze verify --man=no "$tmp/essc-engine.service" 2>&1) || rc=$?
# Lines about other units (the host's) are shown, not held against this one.
ours=$(grep -F "essc-engine" <<<"$out" || true)
others=$(grep -vF "essc-engine" <<<"$out" || true)
[ -n "$others" ] && say "systemd-analyze verify, about other units: $others"
if [ $rc -ne 0 ] || [ -n "$ours" ]; then
    fail "systemd-analyze verify (status $rc): $ours"
fi
say "verify: OK"

# 2. security
out=$(systemd-analyze security --offline=true "$UNIT" 2>&1) || true
score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
[ -n "$score" ] || fail "no exposure score from systemd-analyze security: $out"
grep -F "✗" <<<"$out" | sed 's/^/    /' >&2 || true
if awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s > m) }'; then
    fail "exposure $score is above $MAX_EXPOSURE"
fi
say "security: exposure $score (at most $MAX_EXPOSURE): OK"

# 3. sysusers
mkdir -p "$tmp/root/usr/lib/sysusers.d" "$tmp/root/etc"
cp "$SYSUSERS" "$tmp/root/usr/lib/sysusers.d/essc-engine.conf"
out=$(systemd-sysusers --root="$tmp/root" --dry-run 2>&1) || fail "systemd-sysusers: $out"
grep -qF "essc-engine.conf:" <<<"$out" && fail "systemd-sysusers: $out"
user=$(sed -n 's/^User=//p' "$UNIT")
group=$(sed -n 's/^Group=//p' "$UNIT")
grep -qF "Creating user '$user'" <<<"$out" || fail "$SYSUSERS does not create user $user: $out"
grep -qF "Creating group '$group'" <<<"$out" || fail "$SYSUSERS does not create group $group: $out"
say "sysusers: creates $user:$group: OK"
