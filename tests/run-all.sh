#!/usr/bin/env bash
# The README's test command: set the host up, then run every check and test.
# As root it installs what the tests need (tests/setup-host.sh); integration
# tests then run cairn both as root and as the ordinary user cairn-test.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
    bash tests/setup-host.sh
else
    echo "run-all: not root, skipping host setup (tests that need it will say so)" >&2
fi

# A fresh clone builds once: incremental state would only take disk (GBs).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The disk this run has, at its start and end, in CI's log: the tests
# unpack real images.
show_disk() { df -h / /tmp /var/tmp 2>/dev/null | uniq >&2 || true; }
show_disk
trap show_disk EXIT

# cairn's build (static glibc, fixed address): see the file.
source tests/cargo-env.sh

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --no-fail-fast --all-targets -- --test-threads="${CAIRN_TEST_THREADS:-4}"
# After the seed-replay tests above: every fuzz target for a fixed budget
# (stable toolchain, see the script); a crash fails the run.
# (cargo-fuzz picks its own target and flags: ASan needs a dynamic libc.)
env -u CARGO_BUILD_TARGET ${cairn_rustflags_var:+-u "$cairn_rustflags_var"} bash fuzz/run-ci.sh
