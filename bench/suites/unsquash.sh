#!/usr/bin/env bash
# unsquash: `cairn unsquash IMAGE DIR` against `unsquashfs -d DIR IMAGE`
# (squashfs-tools), same image, same destination, same user, same run.
# This is what `cairn build` does to a stage before its first RUN, and
# what a user does to get a directory image.
# The image: the MPI fixture (tests/fixtures/mpi-image.sh: bookworm minbase
# with gcc and OpenMPI, about 600 MB in 16,000 entries, zstd), the base the
# build suite unpacks; built by its script if missing (a debootstrap).
# Destinations: a directory of $work_dir (disk: /var/tmp) and one in
# /dev/shm (tmpfs: no disk in the figure). Each run extracts into a fresh
# DIR (removed, and the disk synced, before each run, untimed), in
# interleaved rounds (bench/interleave.py). As the ordinary user when the
# suite runs as root: neither restores owners nor makes the image's
# device nodes then (both warn; unsquashfs with -no-exit-code, as it
# would otherwise exit 2 for them).
#
# Knobs: BENCH_INTERLEAVED / BENCH_WARMUP (default 5 / 1 here),
# CAIRN_FIXTURES (where the fixture is cached), CAIRN_BENCH_USER.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

suite=unsquash
export BENCH_INTERLEAVED=${BENCH_INTERLEAVED:-5} BENCH_WARMUP=${BENCH_WARMUP:-1}
[ -x "$cairn" ] || die "no cairn binary at $cairn (cargo build --release)"
command -v unsquashfs >/dev/null || die "missing unsquashfs (squashfs-tools)"

img=$("$repo_dir/tests/fixtures/mpi-image.sh" "${CAIRN_FIXTURES:-/var/tmp/cairn-fixtures}" "$cairn") ||
    die "no MPI fixture (tests/fixtures/mpi-image.sh)"
echo "image: $img ($(du -h "$img" | cut -f1), $(unsquashfs -s "$img" 2>/dev/null | grep -m1 -o 'Compression [a-z0-9]*'))"

bench_cairn_for_user
user=${CAIRN_BENCH_USER:-cairn-test}
bench_as_user "$user"
owner=$(id -un)
[ -n "$as" ] && owner=$user

for place in disk shm; do
    case $place in
    disk) parent=$(mktemp -d "$work_dir/unsquash-out.XXXXXX") ;;
    shm) parent=$(mktemp -d /dev/shm/cairn-bench-unsquash.XXXXXX) ;;
    esac
    chown "$owner" "$parent"
    dest=$parent/tree
    # Both must work before they are timed.
    $as "$bin" unsquash "$img" "$dest" >/dev/null || die "cairn unsquash into $place failed"
    rm -rf "$dest"
    $as unsquashfs -q -no-progress -no-exit-code -d "$dest" "$img" >/dev/null 2>&1 || die "unsquashfs into $place failed"
    n_unsquashfs=$(find "$dest" | wc -l)
    rm -rf "$dest"
    $as "$bin" unsquash "$img" "$dest" >/dev/null
    n_cairn=$(find "$dest" | wc -l)
    echo "$place: $n_cairn entries extracted by cairn, $n_unsquashfs by unsquashfs"
    declare -A t=()
    while IFS='=' read -r name secs; do t[$name]=$secs; done < <(
        INTERLEAVE_PREPARE="rm -rf '$dest' && sync" interleaved \
            "cairn=$as $bin unsquash $img $dest" \
            "unsquashfs=$as unsquashfs -q -no-progress -no-exit-code -d $dest $img")
    [ -n "${t[cairn]:-}" ] && [ -n "${t[unsquashfs]:-}" ] || die "the interleaved runs into $place failed"
    report $suite "unsquash the MPI image into $place (vs unsquashfs)" "${t[cairn]}" unsquashfs "${t[unsquashfs]}"
    rm -rf "$parent"
done
