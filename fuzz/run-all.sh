#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds each, one after the other (never two at once),
# starting from the committed seed corpus. Fails (exit 1) if any target crashes, leaks or
# times out; the reproducer is left in fuzz/artifacts/<target>/.
#
#   fuzz/run-all.sh 20            # CI: 20 s per target
#   fuzz/run-all.sh 600           # 10 minutes per target: the long run
#   TARGETS="state_file ipc_frame" fuzz/run-all.sh 60
#
# Works on stable Rust: cargo-fuzz's nightly-only flags are allowed with RUSTC_BOOTSTRAP=1.
# Installs cargo-fuzz (`cargo install cargo-fuzz --locked`, about a minute) if it is missing.
# New inputs found are written to a scratch copy of the corpus, never into fuzz/corpus/ (which
# stays a small, reviewed seed set): set KEEP_CORPUS=1 to grow fuzz/corpus/ instead.
# LOG_DIR=dir keeps each target's libFuzzer log as dir/<target>.log.
set -euo pipefail

if [[ $# -ne 1 || ! $1 =~ ^[0-9]+$ || $1 -eq 0 ]]; then
    echo "usage: $0 SECONDS   (run each fuzz target for SECONDS seconds)" >&2
    exit 2
fi
seconds=$1
fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$fuzz_dir")
cd "$root"

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run-all: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

targets=${TARGETS:-"engine_ops grpc_decode rest_request state_file config_file ipc_frame"}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
[[ -n ${LOG_DIR:-} ]] && mkdir -p "$LOG_DIR"

# Build every target first (one build), so the timed runs below only fuzz.
echo "run-all: building the fuzz targets (release, AddressSanitizer)" >&2
if ! cargo fuzz build >"$scratch/build.log" 2>&1; then
    tail -n 60 "$scratch/build.log" >&2
    echo "run-all: the fuzz targets do not build" >&2
    exit 1
fi

failed=()
for target in $targets; do
    # libFuzzer writes new inputs to the first directory and only reads the others.
    corpora=("$fuzz_dir/corpus/$target")
    if [[ ${KEEP_CORPUS:-0} != 1 ]]; then
        mkdir -p "$scratch/$target"
        corpora=("$scratch/$target" "$fuzz_dir/corpus/$target")
    fi
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    dict="$fuzz_dir/dicts/$target.dict"
    [[ -f $dict ]] && args+=(-dict="$dict")
    log="${LOG_DIR:-$scratch}/$target.log"
    echo "run-all: $target for ${seconds}s" >&2
    if cargo fuzz run "$target" "${corpora[@]}" -- "${args[@]}" >"$log" 2>&1; then
        execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
        rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
        echo "run-all: $target ok: ${execs:-?} runs, ${rate:-?} exec/s" >&2
    else
        echo "run-all: $target FAILED; last lines of its log:" >&2
        tail -n 60 "$log" >&2
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "run-all: crashes in: ${failed[*]} (reproducers in fuzz/artifacts/)" >&2
    exit 1
fi
echo "run-all: every target ran ${seconds}s without a crash" >&2
