#!/usr/bin/env bash
# flatten: `cairn import oci:IMG` against the peer pipelines that produce the
# same squashfs from the same OCI image:
#   - `umoci unpack` + `mksquashfs -comp zstd -Xcompression-level 3 -b 128K`
#   - `ch-convert -i tar -o squash` from a tarball of the same rootfs
# The image (bench_layered_image in lib.sh, shared with the warm suite):
# debootstrap bookworm minbase as layer 1, python3 installed in a
# chroot as layer 2, a few more packages as layer 3 (umoci repack each
# time); a few hundred MB, built once and cached in $work_dir. Wall time
# (hyperfine median), peak RSS (/usr/bin/time -f %M), output size.
#
# ch-convert is an order of magnitude slower: it is timed once (wall and
# peak RSS from one /usr/bin/time run) to keep the suite under 10 minutes.
#
# Knobs: BENCH_RUNS / BENCH_WARMUP (hyperfine; default 3 / 0 here),
# BENCH_FLATTEN_SMALL=1 (skip debootstrap: busybox + a copy of the host's
# /usr/lib/python3* as layers; also the fallback when debootstrap fails).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

suite=flatten
export BENCH_RUNS=${BENCH_RUNS:-3} BENCH_WARMUP=${BENCH_WARMUP:-0}
[ -x "$cairn" ] || die "no cairn binary at $cairn (cargo build --release)"
[ "$(id -u)" = 0 ] || die "the flatten suite needs root (umoci unpack, chroot)"
for t in umoci mksquashfs ch-convert hyperfine; do
    command -v "$t" >/dev/null || die "missing $t"
done

bench_layered_image
img=$bench_oci tag=$bench_oci_tag
out=$work_dir/flatten-out
rm -rf "$out"
mkdir -p "$out"
layers=$(python3 -c 'import json,sys,glob
idx=json.load(open(sys.argv[1]+"/index.json"))
m=[d for d in idx["manifests"] if d.get("annotations",{}).get("org.opencontainers.image.ref.name")==sys.argv[2]][0]
man=json.load(open(sys.argv[1]+"/blobs/sha256/"+m["digest"].split(":")[1]))
print(len(man["layers"]), sum(l["size"] for l in man["layers"]))' "$img" "$tag")
echo "image: $img:$tag (layers, compressed bytes: $layers); rootfs tarball $(du -h "$work_dir/flatten-rootfs.tar" | cut -f1)"

cairn_cmd="$cairn import oci:$img:$tag -o $out/cairn.sqfs"
umoci_cmd="sh -c 'rm -rf $out/bundle && umoci unpack --image $img:$tag $out/bundle >/dev/null && mksquashfs $out/bundle/rootfs $out/umoci.sqfs -comp zstd -Xcompression-level 3 -b 128K -noappend -quiet -no-progress >/dev/null'"

t_cairn=$(hyperfine_median flatten-cairn "$cairn_cmd")
t_umoci=$(hyperfine_median flatten-umoci "$umoci_cmd")
rm -f "$out/ch.sqfs"
/usr/bin/time -f "%e %M" -o "$out/ch-time" ch-convert -i tar -o squash "$work_dir/flatten-rootfs.tar" "$out/ch.sqfs" >/dev/null 2>&1
read -r t_ch r_ch <"$out/ch-time"
report $suite "wall time import (vs umoci unpack+mksquashfs)" "$t_cairn" umoci+mksquashfs "$t_umoci"
report $suite "wall time import (vs ch-convert tar->squash)" "$t_cairn" ch-convert "$t_ch"

rss() { /usr/bin/time -f %M -o "$out/rss" sh -c "$1" >/dev/null 2>&1; cat "$out/rss"; }
r_cairn=$(rss "$cairn_cmd")
r_umoci=$(rss "rm -rf $out/bundle && umoci unpack --image $img:$tag $out/bundle >/dev/null && /usr/bin/time -f %M -o $out/rss2 mksquashfs $out/bundle/rootfs $out/umoci.sqfs -comp zstd -Xcompression-level 3 -b 128K -noappend -quiet -no-progress")
r_umoci=$(( r_umoci > $(cat "$out/rss2") ? r_umoci : $(cat "$out/rss2") ))
report $suite "peak RSS (vs umoci unpack+mksquashfs)" "$r_cairn" umoci+mksquashfs "$r_umoci" KiB
report $suite "peak RSS (vs ch-convert)" "$r_cairn" ch-convert "$r_ch" KiB

s_cairn=$(stat -c %s "$out/cairn.sqfs")
s_umoci=$(stat -c %s "$out/umoci.sqfs")
s_ch=$(stat -c %s "$out/ch.sqfs")
report $suite "output size (vs mksquashfs zstd-3 128K)" "$s_cairn" mksquashfs "$s_umoci" B
report $suite "output size (vs ch-convert)" "$s_cairn" ch-convert "$s_ch" B
rm -rf "$out/bundle"
