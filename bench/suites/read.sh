#!/usr/bin/env bash
# read: file-system work inside a fresh container, each measured as a
# whole run (setup + work + teardown, as a job would be):
#   walk:   find / -xdev -ls            (metadata)
#   read:   cat every file under /usr   (data)
#   python: python3 importing 30 standard modules
# on a Debian bookworm image with python3 (debootstrap; falls back to the
# host's python3 copied into a busybox image when debootstrap fails or
# CAIRN_BENCH_DEBOOTSTRAP=0). Peers, same run: cairn fuse, cairn kernel
# (root), ch-run img.sqfs, squashfuse_ll + chroot, kernel squashfs + chroot
# (root). Goal (issue 5): cairn fuse within 1.25x of the kernel mount on
# walk and python; read-all at least 2x squashfuse_ll.
# cairn fuse runs with its block store (the default: the blocks earlier
# runs decompressed are read back, not decompressed) and without it
# (CAIRN_BLOCK_CACHE=off: a first run of the image).
# Each timed run is a fresh mount: warm runs (issue 16) are off
# (CAIRN_WARM_LINGER=0); bench/suites/warm.sh measures them.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
export CAIRN_WARM_LINGER=0

root="$work_dir/read-rootfs"
img="$work_dir/read.sqfs"
# Debian's mirror, as the MPI test fixture finds it (the apt sources may
# list other vendors' repositories first).
mirror=${CAIRN_DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ ! -f "$img" ]; then
    rm -rf "$root"
    made=""
    if [ "${CAIRN_BENCH_DEBOOTSTRAP:-1}" != 0 ] && command -v debootstrap >/dev/null && [ -n "$mirror" ]; then
        if timeout 900 debootstrap --variant=minbase --include=python3 bookworm "$root" "$mirror" >"$work_dir/debootstrap.log" 2>&1; then
            made=1
        else
            echo "read: debootstrap failed (see $work_dir/debootstrap.log), using the host's python3" >&2
            rm -rf "$root"
        fi
    fi
    if [ -z "$made" ]; then
        bench_busybox_rootfs "$root"
        mkdir -p "$root/usr/lib"
        py=$(readlink -f /usr/bin/python3)
        cp "$py" "$root/usr/bin/python3"
        cp -a /usr/lib/python3* "$root/usr/lib/"
        # GNU find (busybox's has no -ls; busybox sh prefers its own
        # applets, so the workloads name /usr/bin/find).
        cp /usr/bin/find "$root/usr/bin/find"
        rm -f "$root/bin/find"
        for exe in "$py" /usr/bin/find; do
            for lib in $(ldd "$exe" | grep -oE '/[^ ]+'); do
                mkdir -p "$root$(dirname "$lib")"
                cp -L "$lib" "$root$lib"
            done
        done
    fi
    chmod 1777 "$root/tmp"
    # The workloads as scripts in the image: hyperfine splits a command
    # line itself, so nested quoting would not survive.
    mods=$bench_python_modules
    mkdir -p "$root/bench"
    echo '/usr/bin/find / -xdev -ls | wc -l' >"$root/bench/walk"
    echo '/usr/bin/find /usr -xdev -type f -exec cat {} + | wc -c' >"$root/bench/read"
    echo "python3 -c 'import $mods'" >"$root/bench/python"
    chmod -R a+rX "$root/bench"
    mksquashfs "$root" "$img" -noappend -quiet -no-progress -comp zstd >/dev/null
    chmod 0644 "$img"
fi
# ch-run needs $USER.
export USER=${USER:-$(id -un)}
bench_cairn_for_user

mnt="$work_dir/read-mnt"
mkdir -p "$mnt"
# The bare peers as scripts (hyperfine splits one command line itself).
cat >"$work_dir/read-squashfuse.sh" <<SCRIPT
#!/bin/sh
squashfuse_ll "$img" "$mnt" || exit 1
unshare -r chroot "$mnt" /bin/sh "\$1"; rc=\$?
fusermount -u "$mnt"
exit \$rc
SCRIPT
cat >"$work_dir/read-kernel.sh" <<SCRIPT
#!/bin/sh
mount -o loop,ro "$img" "$mnt" || exit 1
chroot "$mnt" /bin/sh "\$1"; rc=\$?
umount "$mnt"
exit \$rc
SCRIPT
chmod 0755 "$work_dir/read-squashfuse.sh" "$work_dir/read-kernel.sh"

export BENCH_RUNS=${BENCH_RUNS:-10}
kernel=""
[ "$(id -u)" = 0 ] && "$bin" run --mount kernel "$img" -- true && kernel=1
for w in walk python read; do
    cmd="/bench/$w"
    "$bin" run --mount fuse "$img" -- /bin/sh "$cmd" || die "cairn fuse $w failed"
    fuse_t=$(hyperfine_median "read-$w-cairn-fuse" "$bin" run --mount fuse "$img" -- /bin/sh "$cmd")
    chrun_t=$(hyperfine_median "read-$w-chrun" ch-run "$img" -- /bin/sh "$cmd")
    cold_t=$(hyperfine_median "read-$w-cairn-fuse-cold" env CAIRN_BLOCK_CACHE=off "$bin" run --mount fuse "$img" -- /bin/sh "$cmd")
    report read "$w: cairn fuse (vs ch-run img.sqfs)" "$fuse_t" ch-run "$chrun_t"
    if command -v squashfuse_ll >/dev/null; then
        sq_t=$(hyperfine_median "read-$w-squashfuse" "$work_dir/read-squashfuse.sh" "$cmd")
        report read "$w: cairn fuse (vs squashfuse_ll)" "$fuse_t" squashfuse_ll "$sq_t"
        report read "$w: cairn fuse, block store off (vs squashfuse_ll)" "$cold_t" squashfuse_ll "$sq_t"
    fi
    if [ -n "$kernel" ]; then
        ck_t=$(hyperfine_median "read-$w-cairn-kernel" "$bin" run --mount kernel "$img" -- /bin/sh "$cmd")
        k_t=$(hyperfine_median "read-$w-kernel" "$work_dir/read-kernel.sh" "$cmd")
        report read "$w: cairn fuse (vs kernel squashfs)" "$fuse_t" kernel "$k_t"
        report read "$w: cairn fuse, block store off (vs kernel squashfs)" "$cold_t" kernel "$k_t"
        report read "$w: cairn kernel (vs kernel squashfs)" "$ck_t" kernel "$k_t"
    fi
done
