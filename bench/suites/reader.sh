#!/usr/bin/env bash
# Suite "reader": cairn's squashfs reader (through examples/readbench.rs and
# the library API) against squashfuse_ll and, as root, the kernel's squashfs,
# on the same zstd image of a copy of the host's /usr/lib (about
# READER_BENCH_MB MB, default 200), in the same run:
#  - sequential read of every file, MB/s (ratio = cairn/peer: above 1 means
#    cairn is faster),
#  - random aligned 4 KiB reads over 256 pre-opened files, mean microseconds
#    per read (ratio below 1 means cairn is faster).
# Three settings: everything in the page cache; image in the page cache but
# each mount fresh (every side decompresses: the fair one); as root, cold
# (drop_caches before the run).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

size_mb=${READER_BENCH_MB:-200}
src_root=${READER_BENCH_SRC:-/usr/lib}
random_reads=${READER_BENCH_RANDOM:-20000}
tree="$work_dir/reader-tree-$size_mb"
image="$work_dir/reader-$size_mb.sqfs"
mnt_fuse="$work_dir/reader-mnt-fuse"
mnt_kernel="$work_dir/reader-mnt-kernel"

(cd "$repo_dir" && cargo build --release -q --example readbench)
readbench="$repo_dir/$cairn_target_dir/release/examples/readbench"

squashfuse_ll=$(command -v squashfuse_ll || true)
[ -n "$squashfuse_ll" ] || squashfuse_ll=$(find /usr/lib /usr/libexec -name squashfuse_ll -type f 2>/dev/null | head -1)
[ -x "$squashfuse_ll" ] || die "squashfuse_ll not found (package squashfuse)"

# The input tree: regular files, symlinks and directories copied from
# $src_root until about $size_mb MB (sorted, so the same on every run).
if [ ! -f "$tree/.complete" ]; then
    rm -rf "$tree"
    mkdir -p "$tree"
    python3 - "$src_root" "$tree" "$size_mb" <<'PY'
import os, shutil, sys
src, dst, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]) << 20
total = 0
for root, dirs, files in os.walk(src):
    dirs.sort()
    for name in sorted(files):
        p = os.path.join(root, name)
        if os.path.islink(p) or not os.path.isfile(p):
            continue
        try:
            size = os.path.getsize(p)
            if total + size > limit:
                continue
            out = os.path.join(dst, os.path.relpath(p, src))
            os.makedirs(os.path.dirname(out), exist_ok=True)
            shutil.copyfile(p, out)
            total += size
        except OSError:
            pass
    if total >= limit * 0.98:
        break
PY
    touch "$tree/.complete"
fi
if [ ! -f "$image" ] || [ "$tree/.complete" -nt "$image" ]; then
    mksquashfs "$tree" "$image" -comp zstd -Xcompression-level 3 -quiet -no-progress -noappend
fi
bytes=$(du -sb --apparent-size "$tree" | cut -f1)
echo "reader: $(python3 -c "print(round($bytes/1e6))") MB tree, image $(du -h "$image" | cut -f1)"

mounted=()
cleanup() {
    for m in "${mounted[@]}"; do
        fusermount3 -u "$m" 2>/dev/null || umount "$m" 2>/dev/null || true
    done
}
trap cleanup EXIT

mkdir -p "$mnt_fuse" "$mnt_kernel"
"$squashfuse_ll" "$image" "$mnt_fuse"
mounted+=("$mnt_fuse")
kernel=no
if [ "$(id -u)" = 0 ] && mount -t squashfs -o loop,ro "$image" "$mnt_kernel" 2>/dev/null; then
    mounted+=("$mnt_kernel")
    kernel=yes
fi

# Warm every path once (image and mounted file data in the page cache).
cat "$image" >/dev/null
"$readbench" seq "$image" >/dev/null
"$readbench" seq "$image" --dir "$mnt_fuse" >/dev/null
[ $kernel = yes ] && "$readbench" seq "$image" --dir "$mnt_kernel" >/dev/null

mbps() { python3 -c "import sys; print(f'{int(sys.argv[1])/1e6/float(sys.argv[2]):.1f}')" "$bytes" "$1"; }
export BENCH_RUNS=${BENCH_RUNS:-5} BENCH_WARMUP=${BENCH_WARMUP:-1}

# 1. Everything warm: the mounts serve file data from the kernel's page
#    cache (no decompression); cairn's reader decompresses every block.
t_cairn=$(hyperfine_median reader-seq-cairn "$readbench" seq "$image")
t_fuse=$(hyperfine_median reader-seq-fuse "$readbench" seq "$image" --dir "$mnt_fuse")
report reader "seq read MB/s (page cache) vs squashfuse_ll" "$(mbps "$t_cairn")" squashfuse_ll "$(mbps "$t_fuse")" " MB/s"
if [ $kernel = yes ]; then
    t_kernel=$(hyperfine_median reader-seq-kernel "$readbench" seq "$image" --dir "$mnt_kernel")
    report reader "seq read MB/s (page cache) vs kernel" "$(mbps "$t_cairn")" kernel "$(mbps "$t_kernel")" " MB/s"
fi

median_of() { # median of 5 runs of a command printing one number
    for _ in 1 2 3 4 5; do "$@"; done | sort -g | sed -n 3p
}
r_cairn=$(median_of "$readbench" random "$image" "$random_reads")
r_fuse=$(median_of "$readbench" random "$image" "$random_reads" --dir "$mnt_fuse")
report reader "random 4K read us (page cache) vs squashfuse_ll" "$r_cairn" squashfuse_ll "$r_fuse" " us"
if [ $kernel = yes ]; then
    r_kernel=$(median_of "$readbench" random "$image" "$random_reads" --dir "$mnt_kernel")
    report reader "random 4K read us (page cache) vs kernel" "$r_cairn" kernel "$r_kernel" " us"
fi

# 2. Image warm, mount fresh: remounting drops the mount's decompressed
#    pages but not the image file's, so every side decompresses every
#    block it reads, as cairn's reader does. The fair figure for the reader.
remount() { # remount fuse|kernel
    if [ "$1" = fuse ]; then
        fusermount3 -u "$mnt_fuse"
        "$squashfuse_ll" "$image" "$mnt_fuse"
    else
        umount "$mnt_kernel"
        mount -t squashfs -o loop,ro "$image" "$mnt_kernel"
    fi
}
seconds_of() { # seconds_of CMD...: wall time of one run
    local s e
    s=$(date +%s.%N)
    "$@" >/dev/null
    e=$(date +%s.%N)
    python3 -c "import sys; print(float(sys.argv[2])-float(sys.argv[1]))" "$s" "$e"
}
fresh_median() { # fresh_median fuse|kernel|none seq|random CMD...: median of 5
    local how=$1 kind=$2; shift 2
    for _ in 1 2 3 4 5; do
        [ "$how" = none ] || remount "$how"
        if [ "$kind" = seq ]; then seconds_of "$@"; else "$@"; fi
    done | sort -g | sed -n 3p
}
f_cairn=$(fresh_median none seq "$readbench" seq "$image")
f_fuse=$(fresh_median fuse seq "$readbench" seq "$image" --dir "$mnt_fuse")
report reader "seq read MB/s (fresh mount) vs squashfuse_ll" "$(mbps "$f_cairn")" squashfuse_ll "$(mbps "$f_fuse")" " MB/s"
fr_cairn=$(fresh_median none random "$readbench" random "$image" "$random_reads")
fr_fuse=$(fresh_median fuse random "$readbench" random "$image" "$random_reads" --dir "$mnt_fuse")
report reader "random 4K read us (fresh mount) vs squashfuse_ll" "$fr_cairn" squashfuse_ll "$fr_fuse" " us"
if [ $kernel = yes ]; then
    f_kernel=$(fresh_median kernel seq "$readbench" seq "$image" --dir "$mnt_kernel")
    report reader "seq read MB/s (fresh mount) vs kernel" "$(mbps "$f_cairn")" kernel "$(mbps "$f_kernel")" " MB/s"
    fr_kernel=$(fresh_median kernel random "$readbench" random "$image" "$random_reads" --dir "$mnt_kernel")
    report reader "random 4K read us (fresh mount) vs kernel" "$fr_cairn" kernel "$fr_kernel" " us"
fi

# Cold (root only): nothing in the page cache before each timed read.
if [ "$(id -u)" = 0 ] && [ -w /proc/sys/vm/drop_caches ]; then
    cold() {
        sync
        echo 3 >/proc/sys/vm/drop_caches
        seconds_of "$@"
    }
    c_cairn=$(cold "$readbench" seq "$image")
    c_fuse=$(cold "$readbench" seq "$image" --dir "$mnt_fuse")
    report reader "seq read MB/s (cold) vs squashfuse_ll" "$(mbps "$c_cairn")" squashfuse_ll "$(mbps "$c_fuse")" " MB/s"
    if [ $kernel = yes ]; then
        c_kernel=$(cold "$readbench" seq "$image" --dir "$mnt_kernel")
        report reader "seq read MB/s (cold) vs kernel" "$(mbps "$c_cairn")" kernel "$(mbps "$c_kernel")" " MB/s"
    fi
fi
