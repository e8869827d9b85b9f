#!/usr/bin/env bash
# Coverage-guided fuzzing of the native parsers (docs/TESTING.md, "Fuzzing").
#
#   fuzz/run.sh                     every harness, FUZZ_SECONDS each (default 180)
#   FUZZ_SECONDS=60 fuzz/run.sh     shorter
#   FUZZ_HARNESSES="c-wire framing" fuzz/run.sh     some of them
#   FUZZ_BUILD_ONLY=1 fuzz/run.sh   build, do not run
#
# Builds what it needs into build/fuzz/ (libFuzzer binaries of the C parsers, an
# ASan- and coverage-instrumented copy of engine._core for the atheris harnesses),
# installing clang and atheris when they are missing; runs each harness on its seed
# corpus (fuzz/corpus/, read only) plus its working corpus (var/fuzz/corpus/, grows);
# writes findings to var/fuzz/findings/<harness>/ and exits non-zero if any harness
# found anything.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VPY=${VPY:-$ROOT/.venv/bin/python}
SECONDS_EACH=${FUZZ_SECONDS:-180}
BUILD=$ROOT/build/fuzz
VAR=$ROOT/var/fuzz
ALL="c-wire c-presentation c-id-parse c-fpset framing wire-diff presentation-diff parse-ids-diff revocation-files proxy-protocol signed-objects"
HARNESSES=${FUZZ_HARNESSES:-$ALL}

say() { echo "fuzz: $*" >&2; }
die() { say "$*"; exit 2; }

# --- tools ----------------------------------------------------------------------------
fuzzer_runtime() { [ -n "$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null | grep /)" ] \
    && [ -f "$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a)" ]; }
if ! command -v clang >/dev/null || ! fuzzer_runtime; then
    say "installing clang and its libFuzzer/sanitizer runtimes (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq clang >&2 || die "apt-get install clang failed"
    major=$(clang -dumpversion | cut -d. -f1)
    fuzzer_runtime || apt-get install -y -qq "libclang-rt-$major-dev" >&2 \
        || die "apt-get install libclang-rt-$major-dev failed"
    fuzzer_runtime || die "clang has no libFuzzer runtime"
fi
[ -x "$VPY" ] || die "no $VPY: run 'make build' first"
if ! "$VPY" -c "import atheris" 2>/dev/null; then
    say "installing atheris into the venv"
    "$VPY" -m pip install -q atheris >&2 || die "pip install atheris failed"
fi
RTDIR=$(dirname "$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a)")

# --- build ----------------------------------------------------------------------------
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-g -O1 -std=gnu11 -fno-strict-aliasing -fno-omit-frame-pointer"
stamp_of() { { clang --version; echo "$CFLAGS $SAN"; cat fuzz/run.sh "$@"; } | sha256sum | cut -c1-16; }
mkdir -p "$BUILD/bin" "$BUILD/ext/obj" "$BUILD/ext/pkg/engine"

declare -A C_SRC=(
    [c-wire]="fuzz/native/fuzz_wire.c engine/native/wire.c"
    [c-presentation]="fuzz/native/fuzz_presentation.c engine/native/presentation.c"
    [c-id-parse]="fuzz/native/fuzz_id_parse.c engine/native/id_parse.c"
    [c-fpset]="fuzz/native/fuzz_fpset.c engine/native/exact_set.c"
)
for h in "${!C_SRC[@]}"; do
    bin=$BUILD/bin/$h
    stamp=$(stamp_of ${C_SRC[$h]} engine/native/*.h engine/native/*/*.h fuzz/native/*.h)
    [ -x "$bin" ] && [ "$(cat "$bin.stamp" 2>/dev/null)" = "$stamp" ] && continue
    say "building $h"
    # shellcheck disable=SC2086
    clang $CFLAGS -fsanitize=fuzzer $SAN -Iengine/native ${C_SRC[$h]} -o "$bin" \
        || die "build of $h failed"
    echo "$stamp" > "$bin.stamp"
done

# The atheris harnesses' engine._core: coverage (sancov, fed to atheris's libFuzzer)
# and ASan, loaded with a preloaded ASan + libFuzzer runtime (atheris does not ship one).
SUFFIX=$("$VPY" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
CORE=$BUILD/ext/pkg/engine/_core$SUFFIX
PRELOAD=$BUILD/asan_with_fuzzer.so
stamp=$(stamp_of engine/_core.pyx engine/_core.pxd engine/_core_*.pxi engine/includes/*.pxd \
    engine/native/*.c engine/native/*.h engine/native/*/*.c engine/native/*/*.h)
if [ ! -f "$CORE" ] || [ "$(cat "$CORE.stamp" 2>/dev/null)" != "$stamp" ]; then
    say "building the instrumented engine._core (a minute or two)"
    NP=$("$VPY" -c "import numpy; print(numpy.get_include())")
    PYI=$("$VPY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
    "$VPY" -m cython -3 engine/_core.pyx -o "$BUILD/ext/_core.c" > "$BUILD/cython.log" 2>&1 \
        || { cat "$BUILD/cython.log" >&2; die "cython failed"; }
    rm -f "$BUILD"/ext/obj/*.o
    XFLAGS="-fPIC $CFLAGS -fsanitize=fuzzer-no-link,address -Iengine -I$NP -I$PYI"
    XFLAGS="$XFLAGS -DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION -Wno-everything"
    # shellcheck disable=SC2086
    { echo "$BUILD/ext/_core.c"; ls engine/native/*.c engine/native/*/*.c; } |
        xargs -P "$(nproc)" -I{} sh -c \
            'clang -c '"$XFLAGS"' "$1" -o "'"$BUILD"'/ext/obj/$(basename "$1" .c).o"' _ {} \
        || die "compiling the instrumented core failed"
    clang -shared -fsanitize=fuzzer-no-link,address "$BUILD"/ext/obj/*.o -ldl -lpthread \
        -o "$CORE" || die "linking the instrumented core failed"
    echo "$stamp" > "$CORE.stamp"
fi
if [ ! -f "$PRELOAD" ] || [ "$(cat "$PRELOAD.stamp" 2>/dev/null)" != "$(stamp_of)" ]; then
    say "building the ASan + libFuzzer runtime for atheris"
    rm -rf "$BUILD/rt" && mkdir -p "$BUILD/rt/a" "$BUILD/rt/f"
    (cd "$BUILD/rt/a" && ar x "$RTDIR/libclang_rt.asan-x86_64.a" && rm -f asan_preinit*.o \
        && ar x "$RTDIR/libclang_rt.asan_cxx-x86_64.a") || die "no ASan runtime"
    (cd "$BUILD/rt/f" && ar x "$RTDIR/libclang_rt.fuzzer_no_main-x86_64.a") || die "no libFuzzer"
    clang++ -shared -o "$PRELOAD" "$BUILD"/rt/a/*.o "$BUILD"/rt/f/*.o -lpthread -ldl -lrt -lm \
        || die "linking the runtime failed"
    stamp_of > "$PRELOAD.stamp"
    rm -rf "$BUILD/rt"
fi
[ -n "${FUZZ_BUILD_ONLY:-}" ] && { say "built into $BUILD"; exit 0; }

# --- run ------------------------------------------------------------------------------
corpus_of() {
    case $1 in
        c-wire | wire-diff) echo wire ;;
        c-presentation | presentation-diff) echo presentation ;;
        c-id-parse | parse-ids-diff) echo id_parse ;;
        c-fpset) echo fpset ;;
        framing) echo framing ;;
        revocation-files) echo revocation ;;
        proxy-protocol) echo proxy_protocol ;;
        signed-objects) echo signed_objects ;;
        *) return 1 ;;
    esac
}
max_len_of() { case $1 in revocation-files) echo 20000 ;; proxy-protocol) echo 1024 ;; c-presentation | presentation-diff) echo 2048 ;; *) echo 4096 ;; esac; }

failed=0
summary=()
mkdir -p "$VAR/logs" "$VAR/tmp"
for h in $HARNESSES; do
    c=$(corpus_of "$h") || die "unknown harness $h (known: $ALL)"
    work=$VAR/corpus/$c findings=$VAR/findings/$h log=$VAR/logs/$h.log
    mkdir -p "$work" "$findings"
    before=$(ls "$findings" | wc -l)
    opts=(-max_total_time="$SECONDS_EACH" -max_len="$(max_len_of "$h")" -timeout=20
          -rss_limit_mb=3072 -print_final_stats=1 -artifact_prefix="$findings/"
          "$work" "$ROOT/fuzz/corpus/$c")
    say "running $h for ${SECONDS_EACH}s (log: ${log#$ROOT/})"
    if [[ $h == c-* ]]; then
        UBSAN_OPTIONS=print_stacktrace=1 "$BUILD/bin/$h" "${opts[@]}" > "$log" 2>&1
    else
        py=fuzz/py/${h//-/_}.py
        ESSC_FUZZ_CORE=$CORE ESSC_FUZZ_TMP=$VAR/tmp LD_PRELOAD=$PRELOAD \
            ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
            "$VPY" "$py" "${opts[@]}" > "$log" 2>&1
    fi
    rc=$?
    after=$(ls "$findings" | wc -l)
    done_line=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -1)
    execs=$(grep -oE 'stat::number_of_executed_units:[[:space:]]+[0-9]+' "$log" | grep -oE '[0-9]+$')
    speed=$(grep -oE 'stat::average_exec_per_sec:[[:space:]]+[0-9]+' "$log" | grep -oE '[0-9]+$')
    cov=$(echo "$done_line" | grep -oE 'cov: [0-9]+' | grep -oE '[0-9]+')
    ft=$(echo "$done_line" | grep -oE 'ft: [0-9]+' | grep -oE '[0-9]+')
    corp=$(echo "$done_line" | grep -oE 'corp: [0-9]+/[0-9A-Za-z]+' | cut -d' ' -f2)
    line=$(printf '%-18s %-8s execs=%-9s exec/s=%-7s cov=%-5s ft=%-6s corpus=%s' "$h" \
        "$([ $rc -eq 0 ] && [ "$after" -eq "$before" ] && echo ok || echo FINDING)" \
        "${execs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}")
    summary+=("$line")
    if [ $rc -ne 0 ] || [ "$after" -ne "$before" ]; then
        failed=1
        say "$h FOUND SOMETHING (exit $rc); its report:"
        grep -E -A25 'ERROR: |==ERROR|runtime error|contract broken|Uncaught Python exception|Finding:|deadly signal|Traceback' "$log" | head -60 >&2
        for f in $(ls -t "$findings" | head -n $((after - before))); do
            say "  input: ${findings#$ROOT/}/$f"
        done
    fi
done
echo "fuzz: summary (${SECONDS_EACH}s each; logs in ${VAR#$ROOT/}/logs)"
printf '  %s\n' "${summary[@]}"
if [ $failed -ne 0 ]; then
    echo "fuzz: FINDINGS: reproduce with the commands in docs/TESTING.md, section Fuzzing" >&2
    exit 1
fi
