#!/usr/bin/env bash
# A short fuzz run of the `ops` target from the committed seed corpus.
#
# Usage: kernel/pagealloc/fuzz/smoke.sh [SECONDS]   (default 60)
#
# Installs cargo-fuzz if missing (prints "skipped: ..." and exits 0 if that fails), runs
# the target for SECONDS seconds from a temporary copy of corpus/ops (so the committed
# corpus does not grow), prints the inputs run per second, and exits non-zero on a crash
# (the crashing input is left in artifacts/ops/).
set -uo pipefail

secs="${1:-60}"
if ! [[ "$secs" =~ ^[1-9][0-9]*$ ]]; then
    echo "smoke.sh: SECONDS must be a positive whole number, not '$secs'" >&2
    exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here" || exit 2

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked"
    if ! cargo install cargo-fuzz --locked; then
        echo "skipped: cargo-fuzz could not be installed (no network or no C++ compiler?)"
        exit 0
    fi
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus"
cp corpus/ops/* "$work/corpus/"
seeds="$(ls "$work/corpus" | wc -l)"

echo "fuzzing ops for $secs s from $seeds seeds ($(cargo fuzz --version))"
# Build first, so the time limit is all fuzzing.
if ! cargo fuzz build --sanitizer none --no-trace-compares ops >"$work/build.log" 2>&1; then
    cat "$work/build.log"
    echo "smoke.sh: the fuzz target does not build" >&2
    exit 1
fi
cargo fuzz run --sanitizer none --no-trace-compares ops "$work/corpus" -- \
    -max_total_time="$secs" -print_final_stats=1 >"$work/run.log" 2>&1
status=$?
grep -E '^#[0-9]+.*(DONE|pulse)|stat::|ERROR|panicked|SUMMARY' "$work/run.log" | tail -n 15
runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/run.log" | tail -n 1)"
if [ "$status" -ne 0 ]; then
    tail -n 40 "$work/run.log"
    echo "FAILED: the fuzzer found a crash (exit $status); see artifacts/ops/" >&2
    exit "$status"
fi
if [ -z "$runs" ]; then
    tail -n 20 "$work/run.log"
    echo "smoke.sh: no statistics in the fuzzer's output" >&2
    exit 1
fi
echo "fuzz smoke: $runs inputs in $secs s = $((runs / secs)) inputs/s, no crash"
