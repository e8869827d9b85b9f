#!/usr/bin/env bash
# `make test-asan`: the native core built with AddressSanitizer + UBSan and the test
# suites run against that build (docs/TESTING.md, "Sanitizers").
#
# The working tree (tracked files plus untracked ones git does not ignore, as they are
# now, uncommitted edits included) is copied into build/asan/ (git-ignored), the
# extension is built in place THERE with ESSC_SANITIZE=1 (setup.py), and pytest runs
# there with the sanitizer runtimes preloaded into the venv's python.  The regular
# in-place engine/_core*.so of the checkout is never touched.
#
# Usage: scripts/test-asan.sh [pytest arguments]   (or PYTEST_ARGS="..." in the
# environment when no arguments are given; `make test-asan PYTEST_ARGS=...` passes them).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VPY="${VPY:-$ROOT/.venv/bin/python}"
DEST="$ROOT/build/asan"
cd "$ROOT"

if [ $# -eq 0 ] && [ -n "${PYTEST_ARGS:-}" ]; then
    eval "set -- ${PYTEST_ARGS}"
fi

# -- The toolchain: gcc and its sanitizer runtimes (Debian packages), only what is missing.
need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc)
for pkg in libasan8 libubsan1; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
        need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "test-asan: installing ${need[*]}" >&2
    SUDO=()
    [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${need[@]}"
fi
LIBASAN="$(gcc -print-file-name=libasan.so)"
LIBUBSAN="$(gcc -print-file-name=libubsan.so)"
for lib in "$LIBASAN" "$LIBUBSAN"; do
    [ -e "$lib" ] || { echo "test-asan: no $lib (gcc -print-file-name)" >&2; exit 2; }
done

# -- The copy: only files that changed are rewritten (cp -p keeps mtimes, so the build
# step is incremental); files gone from the tree are removed from the copy, build
# outputs (engine/_core.c, the .so, build/, caches) are kept.
mkdir -p "$DEST"
listing="$(mktemp)"
trap 'rm -f "$listing"' EXIT
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do
        # A tracked file deleted in the working tree is left out; so is build/ itself.
        [ -f "$f" ] || continue
        case "$f" in build/*) ;; *) printf '%s\n' "$f" ;; esac
    done | LC_ALL=C sort >"$listing"
while IFS= read -r f; do
    if ! cmp -s "$f" "$DEST/$f"; then
        mkdir -p "$DEST/$(dirname "$f")"
        cp -p "$f" "$DEST/$f"
    fi
done <"$listing"
(cd "$DEST" && find . -type f \
    -not -path './build/*' -not -path './.hypothesis/*' -not -path '*/__pycache__/*' \
    -not -name '_core*.so' -not -path './engine/_core.c' -printf '%P\n' | LC_ALL=C sort) |
    LC_ALL=C comm -23 - "$listing" | while IFS= read -r stale; do rm -f "$DEST/$stale"; done

# -- The sanitized build, in place in the copy.
cd "$DEST"
ESSC_SANITIZE=1 "$VPY" setup.py -q build_ext --inplace

# -- The run.  The ASan runtime must be the first library loaded, hence LD_PRELOAD
# (python itself is not instrumented); the UBSan runtime is preloaded with it.
#   detect_leaks=0        CPython keeps interned objects etc. alive at exit by design.
#   handle_sigbus=0       a SIGBUS from a truncated mapped file is the engine's to
#                         handle (test_revocation_store: its SIGBUS guard, or the
#                         default action killing a child); ASan would report a crash.
#   alloc_dealloc_mismatch=0  no new/delete here, only extension libraries' noise.
#   exitcode=86, log_path  an ASan finding kills the process with 86 and its report is
#                         written to $LOGS/asan.<pid> (pytest and the tests capture
#                         stderr, children's included): any report there fails the run.
#   UBSan: -fno-sanitize-recover=undefined and halt_on_error=1 make the first finding
#   fatal (exit 87); its report goes to stderr, which pytest leaves alone with
#   --capture=sys (Python-level capture only), so it is seen even when pytest dies.
# PYTHONMALLOC=malloc: every Python object (the bytes and bytearray buffers handed to
# the native code) is a malloc block with ASan redzones, not a slice of a pymalloc arena.
# Child processes the tests start inherit all of this (and PYTHONPATH).
LOGS="$DEST/sanitizer-logs"
rm -rf "$LOGS"
mkdir -p "$LOGS"
export LD_PRELOAD="$LIBASAN $LIBUBSAN${LD_PRELOAD:+ $LD_PRELOAD}"
export ASAN_OPTIONS="detect_leaks=0:handle_sigbus=0:alloc_dealloc_mismatch=0:halt_on_error=1:exitcode=86:log_path=$LOGS/asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export PYTHONMALLOC=malloc
export PYTHONPATH="$DEST:$DEST/tests${PYTHONPATH:+:$PYTHONPATH}"
# The server tests run on uvloop only here (tests/conftest.py runs them on uvloop and
# on the standard asyncio loop by default): the native code under the sanitizers is
# the same on either loop, and the second loop would double the server tests' time.
export ESSC_TEST_LOOPS="${ESSC_TEST_LOOPS:-uvloop}"

core="$("$VPY" -c 'import engine._core as c; print(c.__file__)')"
echo "test-asan: engine._core from $core"
case "$core" in
    "$DEST"/engine/_core*.so) ;;
    *) echo "test-asan: engine._core does not resolve to the sanitized build" >&2; exit 2 ;;
esac
# Proof that the runtime is live in this process (not only linked): ASan's own symbol.
"$VPY" -c 'import ctypes; getattr(ctypes.CDLL(None), "__asan_init")' ||
    { echo "test-asan: the ASan runtime is not loaded" >&2; exit 2; }

# Left out:
#   test_bench_harness.py::test_server_topic_quick_end_to_end: the benchmark harness's
#   own smoke test (pure Python; `make bench-quick` runs it in CI), two server processes
#   under fixed-duration loads, about 105 s of a 7.5-minute sanitized run.  The server's
#   native paths it goes through are all driven by test_server*.py here.
#   test_fleet.py, test_haproxy.py, test_client_pool.py, test_supervisor.py: engine
#   processes behind a real HAProxy or under a supervisor, and the client library
#   against servers (orchestration and client-side Python, minutes sanitized); the
#   native paths they go through are driven by test_server*.py, test_replay_redis.py
#   and test_replay_shared.py (the shared table across forked processes), which run.
#   test_proxy_protocol.py: the PROXY header parser is Python (its fuzz harness runs
#   under ASan in make fuzz-ci).
#   test_nginx_process.py, test_revocation_sync.py, test_revocation_distribution.py:
#   nginx and HTTP fetching (Python and urllib3); the native paths they reach (mapping,
#   checking and looking up signed files) are driven by test_revocation_signed.py,
#   test_revocation_serving.py and test_revocation_*.py, which run.
#   test_notify.py, test_systemd_unit.py, test_monitoring.py, test_loadgen_output.py,
#   test_docs_commands.py: the notify protocol, the unit's sandbox, promtool, the load
#   generator's reports and the guides' commands (Python, and servers whose native
#   paths test_server*.py drives here).
# pytest exits 5 when it collected nothing: reported as a failure, as in `make test`.
rc=0
"$VPY" -m pytest -q -p no:cacheprovider --capture=sys \
    --deselect tests/test_bench_harness.py::test_server_topic_quick_end_to_end \
    --ignore tests/test_fleet.py --ignore tests/test_haproxy.py \
    --ignore tests/test_client_pool.py --ignore tests/test_supervisor.py \
    --ignore tests/test_proxy_protocol.py --ignore tests/test_nginx_process.py \
    --ignore tests/test_revocation_sync.py --ignore tests/test_revocation_distribution.py \
    --ignore tests/test_notify.py --ignore tests/test_systemd_unit.py \
    --ignore tests/test_monitoring.py --ignore tests/test_loadgen_output.py \
    --ignore tests/test_docs_commands.py "$@" || rc=$?
if [ $rc -eq 5 ]; then echo "make test-asan: pytest collected no tests" >&2; fi
if [ $rc -eq 87 ]; then echo "make test-asan: UndefinedBehaviorSanitizer reported an error" >&2; fi
if compgen -G "$LOGS/asan.*" >/dev/null; then
    for log in "$LOGS"/asan.*; do
        echo "---- $log" >&2
        cat "$log" >&2
    done
    echo "make test-asan: AddressSanitizer reported an error (above; in $LOGS)" >&2
    [ $rc -ne 0 ] || rc=86
fi
exit $rc
