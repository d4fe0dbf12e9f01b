#!/usr/bin/env bash
# squash: `cairn squash` against `mksquashfs -comp zstd -Xcompression-level 3
# -b 128K` (all cores) and `gensquashfs --pack-dir -c zstd` (squashfs-tools-ng)
# on the same trees: a mixed ~23 MB tree of small and large files copied
# from the host (Python's stdlib, perl-base, /etc, two binaries), a
# debootstrap bookworm minbase rootfs (~200 MB, built once, cached in
# $work_dir) and a ~1 GB tree made of copies of it. Wall time (hyperfine
# median), CPU time (user+sys, hyperfine's mean), output size. The mixed
# tree is also measured in interleaved rounds (bench/squash-interleaved.py):
# a squash of it takes ~0.1 s, where the drift of a shared machine between
# hyperfine's back-to-back batches is larger than the difference measured.
#
# Knobs: BENCH_SQUASH_COPIES (copies in the large tree, default 5; 0 skips
# it), BENCH_SQUASH_EXTRA ("label=DIR ..." trees measured first),
# BENCH_SQUASH_DEFAULT_TREES=0 (only those), BENCH_SQUASH_ROUNDS
# (interleaved rounds on the mixed tree, default 40), BENCH_RUNS /
# BENCH_WARMUP (hyperfine, default 3 / 1 here).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

suite=squash
export BENCH_RUNS=${BENCH_RUNS:-3} BENCH_WARMUP=${BENCH_WARMUP:-1}
copies=${BENCH_SQUASH_COPIES:-5}
[ -x "$cairn" ] || die "no cairn binary at $cairn (cargo build --release)"

# The Debian mirror apt already uses (deb822 or one-line sources).
debian_mirror() {
    local url
    url=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
        grep -oE 'https?://[^ ]*/debian/?' | grep -v security | head -n1)
    echo "${url:-http://deb.debian.org/debian}"
}

rootfs=$work_dir/squash-bookworm-minbase
build_rootfs() {
    [ -f "$rootfs/.done" ] && return 0
    (
        flock 9
        [ -f "$rootfs/.done" ] && exit 0
        rm -rf "$rootfs"
        if [ "$(id -u)" = 0 ] && command -v debootstrap >/dev/null &&
            debootstrap --variant=minbase bookworm "$rootfs" "$(debian_mirror)" >"$work_dir/debootstrap.log" 2>&1; then
            :
        else
            echo "bench: debootstrap failed (see $work_dir/debootstrap.log): falling back to a copy of /usr" >&2
            rm -rf "$rootfs"
            mkdir -p "$rootfs"
            cp -a /usr "$rootfs/usr" 2>/dev/null || true
        fi
        touch "$rootfs/.done"
    ) 9>"$work_dir/squash-rootfs.lock"
}

# The mixed tree: many small text files and a few large binaries, the
# shape of an application's own directory (what #14's speed goal names).
mixed=$work_dir/squash-mixed
build_mixed() {
    [ -f "$mixed/.done" ] && return 0
    rm -rf "$mixed"
    mkdir -p "$mixed/py" "$mixed/bin"
    local py
    # Debian's python (not whichever a PATH puts first).
    py=$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
    tar -C "$py" -cf - --exclude=test --exclude=__pycache__ --exclude=idlelib --exclude=tkinter \
        --exclude=lib2to3 --exclude=pydoc_data --exclude=ensurepip --exclude=site-packages \
        --exclude=dist-packages --exclude='config-*' --exclude=lib-dynload --exclude=encodings \
        --exclude=email --exclude=asyncio --exclude=multiprocessing --exclude=unittest . |
        tar -C "$mixed/py" -xf -
    cp -a /usr/lib/x86_64-linux-gnu/perl-base "$mixed/" 2>/dev/null || true
    # /etc as far as this user can read it.
    cp -a /etc "$mixed/etc" 2>/dev/null || true
    cp "$(readlink -f /usr/bin/python3)" "$(readlink -f /usr/bin/perl)" "$mixed/bin/"
    touch "$mixed/.done"
}

# measure_interleaved LABEL TREE: cairn and mksquashfs in alternating
# rounds; the ratio is the median of the per-round ratios.
measure_interleaved() {
    local label=$1 tree=$2 tsv=$work_dir/squash-interleaved.tsv
    rm -f "$tsv"
    INTERLEAVED_TSV=$tsv python3 "$(dirname "$0")/../squash-interleaved.py" "$tree" \
        "${BENCH_SQUASH_ROUNDS:-40}" cairn="$cairn" >/dev/null
    local cw cc mw mc
    read -r _ mw mc _ _ < <(grep '^mksquashfs' "$tsv")
    read -r _ cw cc _ _ < <(grep '^cairn' "$tsv")
    report "$suite" "$label wall, interleaved (cairn vs mksquashfs)" "$cw" mksquashfs "$mw"
    report "$suite" "$label cpu, interleaved (cairn vs mksquashfs)" "$cc" mksquashfs "$mc"
    echo "   per-round median of mksquashfs/cairn wall: $(awk '$1=="cairn"{print $4}' "$tsv")x"
}

large=$work_dir/squash-large-$copies
build_large() {
    [ -f "$large/.done" ] && return 0
    rm -rf "$large"
    mkdir -p "$large"
    for i in $(seq 1 "$copies"); do
        cp -a "$rootfs" "$large/copy$i"
        # Make each copy differ a little so it is not all duplicates: the
        # large tree then measures compression, not just dedup.
        find "$large/copy$i" -type f -size +64k -name '*.so*' -print0 | head -z -n 200 |
            xargs -0 -r -n 50 sh -c 'for f; do printf "copy%s" "$0" >>"$f"; done' "$i"
    done
    rm -f "$large"/copy*/.done
    touch "$large/.done"
}

# cpu_seconds NAME: mean user+sys seconds of the runs hyperfine_median NAME
# just measured (from its JSON export; no extra run needed).
cpu_seconds() {
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print(round(r["user"]+r["system"],3))' \
        "$work_dir/hf-$1.json"
}

measure() {
    local label=$1 tree=$2
    local out=$work_dir/squash-out
    mkdir -p "$out"
    local mb
    mb=$(du -sm --apparent-size "$tree" | cut -f1)
    echo "-- $label: $tree ($mb MB apparent)"
    local c_cmd="$cairn squash $tree $out/cairn.sqfs"
    local m_cmd="mksquashfs $tree $out/mk.sqfs -comp zstd -Xcompression-level 3 -b 128K -noappend -quiet -no-progress"
    # Level 3 and all cores, like the other two (gensquashfs defaults to
    # zstd level 15 and one job).
    local g_cmd="gensquashfs --pack-dir $tree -c zstd -X level=3 -j $(nproc) -b 131072 -k -f -q $out/gen.sqfs"
    local ct mt gt
    ct=$(hyperfine_median "squash-cairn-$label" "$c_cmd")
    mt=$(hyperfine_median "squash-mk-$label" "$m_cmd")
    report "$suite" "$label wall (cairn vs mksquashfs)" "$ct" mksquashfs "$mt"
    report "$suite" "$label MB/s (cairn vs mksquashfs)" \
        "$(python3 -c "print(round($mb/$ct,1))")" mksquashfs "$(python3 -c "print(round($mb/$mt,1))")" " MB/s"
    local ccpu mcpu gcpu
    ccpu=$(cpu_seconds "squash-cairn-$label")
    mcpu=$(cpu_seconds "squash-mk-$label")
    report "$suite" "$label cpu (cairn vs mksquashfs)" "$ccpu" mksquashfs "$mcpu"
    report "$suite" "$label size (cairn vs mksquashfs)" "$(stat -c %s "$out/cairn.sqfs")" mksquashfs "$(stat -c %s "$out/mk.sqfs")" B
    if command -v gensquashfs >/dev/null; then
        gt=$(hyperfine_median "squash-gen-$label" "$g_cmd")
        gcpu=$(cpu_seconds "squash-gen-$label")
        report "$suite" "$label wall (cairn vs gensquashfs)" "$ct" gensquashfs "$gt"
        report "$suite" "$label cpu (cairn vs gensquashfs)" "$ccpu" gensquashfs "$gcpu"
        report "$suite" "$label size (cairn vs gensquashfs)" "$(stat -c %s "$out/cairn.sqfs")" gensquashfs "$(stat -c %s "$out/gen.sqfs")" B
    fi
    rm -rf "$out"
}

# Extra trees, measured first: BENCH_SQUASH_EXTRA="mixed=/var/tmp/t ...".
for extra in ${BENCH_SQUASH_EXTRA:-}; do
    measure "${extra%%=*}" "${extra#*=}"
done
[ "${BENCH_SQUASH_DEFAULT_TREES:-1}" = 1 ] || exit 0
build_mixed
measure_interleaved mixed "$mixed"
measure mixed "$mixed"
build_rootfs
measure rootfs "$rootfs"
if [ "$copies" -gt 0 ]; then
    build_large
    measure large "$large"
fi
