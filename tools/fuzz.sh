#!/usr/bin/env bash
# Coverage-guided fuzzing of recpack's C code with libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer.
#
#   bash tools/fuzz.sh [--seconds N] [--target NAME] [--system-libjpeg] [--list]
#   bash tools/fuzz.sh --coverage [--target NAME]    # what the kept corpora reach of recpack's C, by line
#
# Targets: every recpack/jpeg/fuzz/*.c that defines LLVMFuzzerTestOneInput (the file's comment says what it
# calls and what its input is); --target runs one of them.  The N seconds (default 60) are shared equally.
#
# What it does, idempotently (all of it in .fuzz/, which git ignores):
#   1. installs clang and its sanitizer and libFuzzer runtimes, dpkg-dev, cmake and make from Debian (tools/lib.sh);
#   2. builds libjpeg-turbo from the Debian source of the installed libjpeg62-turbo, with ASan and coverage
#      (once): the fuzzer then sees into libjpeg, and ASan sees libjpeg's writes into recpack's buffers.
#      If the source cannot be fetched, or with --system-libjpeg, the targets link the system libjpeg, which
#      neither guides the fuzzer nor is checked;
#   3. builds each target (clang -fsanitize=fuzzer,address,undefined, UB fatal) when its sources changed;
#   4. writes seed corpora from the test photos (tools/fuzz/seeds.py, with .venv's Python, and the
#      instrumented build's cjpeg for arithmetic coding and odd sampling factors);
#   5. runs each target for its share of the time on .fuzz/corpus/TARGET (kept and grown across runs)
#      plus the seeds and the inputs of past findings (recpack/jpeg/fuzz/regressions/TARGET), with the
#      JPEG dictionary recpack/jpeg/fuzz/jpeg.dict; after a run of a minute or more a target's corpus is
#      minimized (libFuzzer's -merge=1).
# Exits 1 if any target found a crash, a leak, undefined behaviour, a broken promise (the targets' own
# checks), an input slower than FUZZ_TIMEOUT seconds (default 25) or one needing more than FUZZ_RSS_MB
# (default 2560) of memory; it prints the sanitizer's report and the command that reproduces it:
#   .fuzz/bin/TARGET .fuzz/findings/TARGET/crash-...
# Per-target figures (runs, coverage, features, corpus) go to .fuzz/logs/summary.txt as well.
# FUZZ_FLAGS adds libFuzzer flags to every run (e.g. FUZZ_FLAGS=-use_value_profile=1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
source tools/lib.sh

# The whole script is one block, read before it runs: editing the file meanwhile cannot change a run.
{

seconds=60 only="" system_libjpeg=0 list=0 coverage=0
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --target) only=$2; shift 2 ;;
        --system-libjpeg) system_libjpeg=1; shift ;;
        --list) list=1; shift ;;
        --coverage) coverage=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "fuzz: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

sources=recpack/jpeg
targets=()
for harness in "$sources"/fuzz/*.c; do
    grep -q LLVMFuzzerTestOneInput "$harness" && targets+=("$(basename "$harness" .c)")
done
if [ "$list" = 1 ]; then printf '%s\n' "${targets[@]}"; exit 0; fi
if [ -n "$only" ]; then
    [ -f "$sources/fuzz/$only.c" ] || { echo "fuzz: no target $only (--list names them)" >&2; exit 2; }
    targets=("$only")
fi

work=$repo/.fuzz
lock_folder_of "$work/lock" # one run at a time builds and writes .fuzz
mkdir -p "$work"/{bin,corpus,findings,logs,seeds}

# 1. The compiler and its runtimes.
apt_install_missing fuzz clang dpkg-dev cmake make xz-utils
major=$(clang -dumpversion | cut -d. -f1)
apt_install_missing fuzz "libclang-rt-$major-dev"

# 2. libjpeg-turbo with ASan and coverage, from the source of the libjpeg the extension links.
jpeg_src=$work/libjpeg-turbo/src jpeg_build=$work/libjpeg-turbo/build
build_libjpeg() {
    local apt=$work/libjpeg-turbo/apt codename package version
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    package=$(dpkg-query -W -f='${source:Package}' libjpeg62-turbo 2>/dev/null || echo libjpeg-turbo)
    version=$(dpkg-query -W -f='${Version}' libjpeg62-turbo 2>/dev/null || true)
    [ -n "$codename" ] || return 1
    rm -rf "$work/libjpeg-turbo"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/download"
    # A deb-src list of our own, so that nothing in /etc/apt changes.
    printf 'deb-src http://deb.debian.org/debian %s main\ndeb-src http://deb.debian.org/debian-security %s-security main\n' \
        "$codename" "$codename" >"$apt/sources.list"
    local options=(-q -o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
                   -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache")
    [ "$(id -u)" -eq 0 ] || options+=(-o "APT::Sandbox::User=$(id -un)")
    echo "fuzz: fetching the Debian source of $package ${version:-(any version)}" >&2
    apt-get "${options[@]}" update >"$apt/update.log" 2>&1 || return 1
    (cd "$apt/download" && { { [ -n "$version" ] && apt-get "${options[@]}" source --download-only "$package=$version"; } ||
                               apt-get "${options[@]}" source --download-only "$package"; }) >"$apt/source.log" 2>&1 ||
        return 1
    dpkg-source -x "$apt/download"/*.dsc "$jpeg_src" >"$apt/extract.log" 2>&1 || return 1
    echo "fuzz: building libjpeg-turbo with ASan and coverage (about a minute)" >&2
    cmake -S "$jpeg_src" -B "$jpeg_build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=None \
        "-DCMAKE_C_FLAGS=-g -O1 -fno-omit-frame-pointer -fsanitize=address,fuzzer-no-link" \
        -DENABLE_SHARED=0 -DWITH_SIMD=0 -DWITH_TURBOJPEG=0 -DWITH_JAVA=0 >"$work/logs/libjpeg-cmake.log" 2>&1 &&
        make -C "$jpeg_build" -j"$(nproc)" jpeg-static >"$work/logs/libjpeg-make.log" 2>&1
}
jpeg_flags=() jpeg_libs=(-ljpeg) seed_options=()
if [ "$system_libjpeg" = 0 ]; then
    if [ -f "$jpeg_build/libjpeg.a" ] || build_libjpeg; then
        jpeg_flags=(-I"$jpeg_build" -I"$jpeg_src") jpeg_libs=("$jpeg_build/libjpeg.a")
        # its cjpeg writes the seeds Pillow cannot (arithmetic coding, odd sampling factors)
        [ -x "$jpeg_build/cjpeg-static" ] || make -C "$jpeg_build" cjpeg-static >"$work/logs/cjpeg-make.log" 2>&1 || true
        [ -x "$jpeg_build/cjpeg-static" ] && seed_options=(--cjpeg "$jpeg_build/cjpeg-static")
    else
        echo "fuzz: could not fetch or build libjpeg-turbo's source (logs in $work/libjpeg-turbo);" \
             "fuzzing against the system libjpeg, which neither guides the fuzzer nor is checked" >&2
        system_libjpeg=1
    fi
fi
variant=$([ "$system_libjpeg" = 1 ] && echo system || echo instrumented)

# 3. The targets, rebuilt when a source they compile in is newer than them (or the libjpeg choice changed).
build_target() {
    local target=$1 binary=$work/bin/$1
    if [ -x "$binary" ] && [ "$(cat "$binary.libjpeg" 2>/dev/null)" = "$variant" ] &&
        [ -z "$(find "$sources" -maxdepth 2 \( -name '*.c' -o -name '*.h' \) -newer "$binary" | head -1)" ]; then
        return 0
    fi
    # libjpeg's memory bound and the arithmetic-coded pixel bound smaller than the module's (1.25 GB, 179
    # megapixels), so that inputs claiming large images (and data that fills them legitimately, as zeros of
    # arithmetic coding do) stay fast; the code paths are the same
    clang -g -O1 -fno-omit-frame-pointer -Wall -Wextra -Wno-unused-function \
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -DRECPACK_MAX_MEMORY="(256L << 20)" -DRECPACK_MAX_PIXELS="(16L << 20)" \
        "${jpeg_flags[@]}" "$sources/fuzz/$target.c" "$sources/_resample.c" "${jpeg_libs[@]}" -lm -o "$binary"
    echo "$variant" >"$binary.libjpeg"
}
for target in "${targets[@]}"; do build_target "$target"; done

# 4. Seeds from the test photos.
python=.venv/bin/python # numpy, Pillow and scikit-image's photos
[ -x "$python" ] || { echo "fuzz: the seeds need the project's venv: bash tools/setup.sh first" >&2; exit 2; }
rm -rf "$work/seeds" # this run's seeds only, so that a renamed seed does not linger
"$python" tools/fuzz/seeds.py "$work/seeds" "${seed_options[@]}"

# --coverage: each target rebuilt with clang's source coverage (and ASan, whose runtime the instrumented
# libjpeg needs), run once over everything kept for it, and llvm-cov's report on recpack's C files.
if [ "$coverage" = 1 ]; then
    apt_install_missing fuzz "llvm-$major"
    profiles=$work/coverage
    rm -rf "$profiles"
    mkdir -p "$profiles"
    objects=()
    for target in "${targets[@]}"; do
        clang -g -O1 -Wno-unused-function -fsanitize=fuzzer,address -fprofile-instr-generate -fcoverage-mapping \
            -DRECPACK_MAX_MEMORY="(256L << 20)" -DRECPACK_MAX_PIXELS="(16L << 20)" "${jpeg_flags[@]}" \
            "$sources/fuzz/$target.c" "$sources/_resample.c" "${jpeg_libs[@]}" -lm -o "$profiles/$target"
        inputs=("$work/corpus/$target" "$work/seeds/$target")
        [ -d "$sources/fuzz/regressions/$target" ] && inputs+=("$sources/fuzz/regressions/$target")
        mkdir -p "$work/corpus/$target"
        LLVM_PROFILE_FILE="$profiles/$target.profraw" "$profiles/$target" -runs=0 "${inputs[@]}" \
            >"$work/logs/$target.coverage.log" 2>&1 || true
        objects+=(-object "$profiles/$target")
    done
    "llvm-profdata-$major" merge -sparse "$profiles"/*.profraw -o "$profiles/merged.profdata"
    # the first -object is positional for llvm-cov
    "llvm-cov-$major" report "${objects[@]:1}" -instr-profile="$profiles/merged.profdata" "$sources"/_*.c
    exit 0
fi

# 5. The runs.
share=$(( seconds / ${#targets[@]} ))
[ "$share" -ge 1 ] || share=1
failed=()
summary=$work/logs/summary.txt
echo "# $(date -u +%FT%TZ) ${FUZZ_FLAGS:+FUZZ_FLAGS=$FUZZ_FLAGS }tools/fuzz.sh --seconds $seconds${only:+ --target $only}:" \
     "${share}s a target, libjpeg $variant" >>"$summary"
for target in "${targets[@]}"; do
    mkdir -p "$work/corpus/$target" "$work/findings/$target"
    log=$work/logs/$target.log
    regressions=() # the inputs of past findings, kept beside the targets as seeds (and by the tests)
    [ -d "$sources/fuzz/regressions/$target" ] && regressions=("$sources/fuzz/regressions/$target")
    set +e
    # shellcheck disable=SC2086  # FUZZ_FLAGS is a list of flags
    "$work/bin/$target" -max_total_time="$share" -timeout="${FUZZ_TIMEOUT:-25}" -rss_limit_mb="${FUZZ_RSS_MB:-2560}" \
        -dict="$sources/fuzz/jpeg.dict" -artifact_prefix="$work/findings/$target/" -print_final_stats=1 \
        ${FUZZ_FLAGS:-} "$work/corpus/$target" "$work/seeds/$target" "${regressions[@]}" >"$log" 2>&1
    status=$?
    set -e
    stats=$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9A-Za-z]+' || true)
    runs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
    line="$target: $runs runs (${share}s budget), ${stats:-no stats}"
    if [ "$status" -ne 0 ]; then
        artifact=$(grep -oE "Test unit written to .*" "$log" | tail -1 | sed 's/Test unit written to //')
        line="$line; FINDING (exit $status)${artifact:+: $artifact}"
        failed+=("$target")
        echo "---- $target: $log" >&2
        # the report: from its first line, 30 lines
        awk '/^==[0-9]+==|runtime error|broken promise|ERROR: libFuzzer/ { found = 1 } found && shown++ < 30' "$log" >&2
        [ -n "$artifact" ] && echo "reproduce: $work/bin/$target $artifact" >&2
    fi
    echo "$line" | tee -a "$summary"
    # after a long run, the kept corpus minimized (libFuzzer's merge: the fewest inputs with every feature),
    # so that the next run, which replays all of it first, starts fast
    if [ "$status" -eq 0 ] && [ "$share" -ge 60 ]; then
        rm -rf "$work/corpus/$target.merged"
        mkdir -p "$work/corpus/$target.merged"
        if "$work/bin/$target" -merge=1 -timeout="${FUZZ_TIMEOUT:-25}" -rss_limit_mb="${FUZZ_RSS_MB:-2560}" \
            "$work/corpus/$target.merged" "$work/corpus/$target" >"$work/logs/$target.merge.log" 2>&1; then
            rm -rf "$work/corpus/$target" && mv "$work/corpus/$target.merged" "$work/corpus/$target"
        fi
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: findings in ${failed[*]} (logs in $work/logs)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, no findings" >&2
exit 0
}
