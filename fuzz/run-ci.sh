#!/usr/bin/env bash
# CI's fuzzing step (issue #15): every cargo-fuzz target in fuzz/Cargo.toml
# runs for a fixed budget, after the seed-replay tests of `cargo test`.
#
# CI has only the stable toolchain, so cargo-fuzz (pinned, installed once
# into a cache directory) builds with RUSTC_BOOTSTRAP=1: libFuzzer's coverage
# hooks and -Zsanitizer=address are unstable flags, and the AddressSanitizer
# runtime ships with stable's std for x86_64-unknown-linux-gnu.
#
# Each target fuzzes a throw-away copy of its seeds (fuzz/corpus-seed/<target>
# or the fixtures it is documented to start from) plus its regression inputs
# (fuzz/regressions/<target>/), so the tree never grows. A crash, a timeout or
# an out-of-memory fails the step; the input is copied into
# fuzz/regressions/<target>/ (where tests/fuzz_regressions.rs replays it once
# committed) and printed as base64, since CI's clone is thrown away.
#
# Settings: CAIRN_FUZZ_SECS (per target, default 25; 0 skips the step),
# CAIRN_FUZZ_TARGETS (space-separated subset), CAIRN_FUZZ_SANITIZER
# (address or none), CAIRN_FUZZ_TOOLS (where cargo-fuzz is installed).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo_fuzz_version=0.13.2
secs=${CAIRN_FUZZ_SECS:-25}
sanitizer=${CAIRN_FUZZ_SANITIZER:-address}
tools=${CAIRN_FUZZ_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/cairn-ci/cargo-fuzz-$cargo_fuzz_version}

if [ "$secs" = 0 ]; then
    echo "fuzz: CAIRN_FUZZ_SECS=0, skipped"
    exit 0
fi

# cargo-fuzz from crates.io, pinned; reused when the cache already has it.
if ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -qx "cargo-fuzz $cargo_fuzz_version"; then
    echo "fuzz: installing cargo-fuzz $cargo_fuzz_version into $tools"
    cargo install --quiet --locked --version "=$cargo_fuzz_version" --root "$tools" cargo-fuzz
fi
export PATH="$tools/bin:$PATH"
export RUSTC_BOOTSTRAP=1

# fuzz/Cargo.lock must be current, like the main crate's (--locked there).
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null

read -r -a targets <<<"${CAIRN_FUZZ_TARGETS:-$(cargo fuzz list | tr '\n' ' ')}"

# Where each target's seeds are. Targets not listed start from nothing but
# their regressions (their inputs drive generators, any bytes are valid).
seeds_of() {
    case "$1" in
    cdi_spec) echo tests/fixtures/cdi ;;
    site_config) echo site-config/cairn.toml site-config/examples ;;
    *) [ -d "fuzz/corpus-seed/$1" ] && echo "fuzz/corpus-seed/$1" ;;
    esac
    [ -d "fuzz/regressions/$1" ] && echo "fuzz/regressions/$1"
    return 0
}

started=$(date +%s)
echo "fuzz: building ${#targets[@]} targets (sanitizer $sanitizer)"
# All targets at once (cargo fuzz build takes one or all), so each run
# below starts at once and a build error fails the step.
cargo fuzz build --sanitizer "$sanitizer"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failed=()
for t in "${targets[@]}"; do
    corpus=$work/$t/corpus
    artifacts=$work/$t/artifacts
    mkdir -p "$corpus" "$artifacts"
    for s in $(seeds_of "$t"); do
        if [ -d "$s" ]; then
            find "$s" -maxdepth 1 -type f ! -name '.*' -exec cp -t "$corpus" {} +
        else
            cp -t "$corpus" "$s"
        fi
    done
    before=$(find "$corpus" -type f | wc -l)
    log=$work/$t/log
    rc=0
    # -timeout: an input slower than this is a hang. The harnesses' own
    # budgets keep every input to milliseconds, but the timer is wall-clock
    # and a loaded 2-core machine once stalled one 14 ms input for 155 s.
    # -rss_limit_mb: runaway allocation is a bug.
    cargo fuzz run --sanitizer "$sanitizer" "$t" "$corpus" -- \
        -max_total_time="$secs" -timeout=60 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    after=$(find "$corpus" -type f | wc -l)
    kept=()
    for a in "$artifacts"/*; do
        [ -f "$a" ] || continue
        mkdir -p "fuzz/regressions/$t"
        cp "$a" "fuzz/regressions/$t/"
        kept+=("fuzz/regressions/$t/$(basename "$a")")
    done
    if [ "$rc" = 0 ] && [ ${#kept[@]} = 0 ]; then
        echo "fuzz: $t: ok, ${execs:-?} executions (${rate:-?}/s) in ${secs}s, corpus $before -> $after"
        continue
    fi
    failed+=("$t")
    echo "fuzz: $t: FAILED (exit $rc) after ${execs:-?} executions; the log ends:"
    tail -n 60 "$log" | sed 's/^/    /'
    for k in "${kept[@]}"; do
        echo "fuzz: $t: input kept as $k (commit it: tests/fuzz_regressions.rs replays it)"
        if [ "$(stat -c %s "$k")" -le 65536 ]; then
            echo "fuzz: $t: $k as base64 (base64 -d > $k):"
            base64 -w 100 "$k" | sed 's/^/    /'
        fi
    done
done

echo "fuzz: ${#targets[@]} targets in $(($(date +%s) - started))s"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: failed: ${failed[*]}" >&2
    exit 1
fi
