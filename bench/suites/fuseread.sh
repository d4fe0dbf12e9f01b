#!/usr/bin/env bash
# fuseread: reading a squashfs image through cairn's FUSE server against
# squashfuse_ll and the kernel's squashfs, same image, same run. Each timed
# run is a fresh mount (mount, work, unmount), as a job would see it.
#   walk:     find MNT -ls >/dev/null        (metadata: lookup, getattr, readdir)
#   read-all: tar cf - MNT | cat >/dev/null  (every byte of every file)
#   pyimport: python3 importing 30 standard modules from MNT (when the
#             input is this python3's /usr/lib/python3.X)
# Goals (issue 5): cairn within 1.25x of the kernel on the walk, read-all
# at least 2x squashfuse_ll's throughput (time ratio <= 0.5), python start
# within 1.25x of the kernel.
# Input: FUSEREAD_SRC (default: the host's /usr/lib/python3*), squashed
# with mksquashfs -comp zstd. The kernel mount needs root.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

suite=fuseread
export BENCH_RUNS=${BENCH_RUNS:-10} BENCH_WARMUP=${BENCH_WARMUP:-2}
[ "$(id -u)" = 0 ] || die "$suite: the kernel squashfs mount needs root"
for tool in mksquashfs squashfuse_ll hyperfine; do
    command -v "$tool" >/dev/null || die "$suite: $tool missing"
done

(cd "$repo_dir" && cargo build --release --locked -q --example fuse_serve)
serve="$repo_dir/$cairn_target_dir/release/examples/fuse_serve"

src=${FUSEREAD_SRC:-$(ls -d /usr/lib/python3.* 2>/dev/null | sort -V | tail -1)}
[ -d "$src" ] || die "$suite: no input tree (set FUSEREAD_SRC)"
img="$work_dir/fuseread.sqfs"
if [ ! -f "$img" ] || [ "$src" -nt "$img" ]; then
    mksquashfs "$src" "$img" -comp zstd -noappend -quiet -no-progress
fi
mnt="$work_dir/fuseread-mnt"
mkdir -p "$mnt"
umount -l "$mnt" 2>/dev/null || true
echo "input: $src ($(du -sh "$src" | cut -f1)), image $(du -h "$img" | cut -f1)," \
    "$(find "$src" | wc -l) entries; $BENCH_RUNS runs each"

# python3 start importing 30 standard modules from the mount: the host's
# interpreter of the same version with sys.path pointed at the mounted copy
# of its stdlib (only when the input is a /usr/lib/python3.X).
py=/usr/bin/$(basename "$src")
cat >"$work_dir/fuseread-import.py" <<PY
import sys
sys.path = ["$mnt", "$mnt/lib-dynload"]
import json, email.parser, http.client, urllib.request, xml.etree.ElementTree, logging
import argparse, subprocess, threading, asyncio, decimal, fractions, statistics, csv
import sqlite3, ssl, hashlib, zipfile, tarfile, gzip, bz2, lzma, pathlib, tempfile
import shutil, textwrap, difflib, pickle, unittest, dataclasses
assert json.__file__.startswith("$mnt"), json.__file__
PY
pyimport="$py -I -S $work_dir/fuseread-import.py"

# One timed run per tool: mount fresh, run the work, unmount.
walk='find '"$mnt"' -ls >/dev/null'
readall='tar cf - '"$mnt"' 2>/dev/null | cat >/dev/null'
cairn_run()  { echo "$serve $img $mnt -- sh -c '$1'"; }
sqfuse_run() { echo "sh -c 'squashfuse_ll $img $mnt && { $1; }; umount $mnt'"; }
kernel_run() { echo "sh -c 'mount -t squashfs -o loop,ro $img $mnt && { $1; }; umount $mnt'"; }

# Sanity: all three see the same tree (squashfuse_ll says 0 for the size
# of every directory, so directory sizes are left out).
for run in cairn_run sqfuse_run kernel_run; do
    eval "$($run "find $mnt -type d -printf \"%P %m\\n\" -o -printf \"%P %s %m\\n\" | sort | md5sum > $work_dir/fuseread-$run.sum")"
done
cmp -s "$work_dir/fuseread-cairn_run.sum" "$work_dir/fuseread-kernel_run.sum" ||
    die "$suite: cairn's mount lists another tree than the kernel's"
cmp -s "$work_dir/fuseread-sqfuse_run.sum" "$work_dir/fuseread-kernel_run.sum" ||
    die "$suite: squashfuse_ll lists another tree than the kernel's"

metrics="walk readall"
if [ -x "$py" ] && eval "$(cairn_run "$pyimport")"; then
    metrics="$metrics pyimport"
else
    echo "pyimport skipped: $src is not this python3's stdlib"
fi
for metric in $metrics; do
    work=${!metric}
    c=$(hyperfine_median "$suite-$metric-cairn" "$(cairn_run "$work")")
    s=$(hyperfine_median "$suite-$metric-squashfuse" "$(sqfuse_run "$work")")
    k=$(hyperfine_median "$suite-$metric-kernel" "$(kernel_run "$work")")
    report "$suite" "$metric (fresh mount) vs kernel" "$c" kernel "$k"
    report "$suite" "$metric (fresh mount) vs squashfuse_ll" "$c" squashfuse_ll "$s"
done
