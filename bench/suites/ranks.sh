#!/usr/bin/env bash
# ranks: 32 ranks of one job started at once on one node, until all are
# done: `cairn run --join=TAG img.sqfs -- true` x32 against
# `ch-run --join --join-ct=32 --join-tag=TAG img.sqfs -- true` x32.
# As the ordinary user (cairn-test) when the suite runs as root.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

user=${CAIRN_BENCH_USER:-cairn-test}
n=${BENCH_RANKS:-32}
root="$work_dir/ranks-rootfs"
if [ ! -x "$root/bin/busybox" ]; then
    rm -rf "$root"
    mkdir -p "$root"/{bin,dev,etc,home,proc,root,run,sys,tmp,mnt,usr/bin,var/tmp}
    cp /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
    echo 'root:x:0:' >"$root/etc/group"
    : >"$root/etc/hosts"
    : >"$root/etc/resolv.conf"
    chmod 1777 "$root/tmp"
    chmod -R a+rX "$root"
fi
img="$work_dir/ranks.sqfs"
[ -f "$img" ] || mksquashfs "$root" "$img" -noappend -quiet -no-progress >/dev/null
chmod 0644 "$img"
bin="$work_dir/cairn"
cp "$cairn" "$bin"
chmod 0755 "$bin"

as=""
if [ "$(id -u)" = 0 ] && id "$user" >/dev/null 2>&1; then
    as="setpriv --reuid=$(id -u "$user") --regid=$(id -g "$user") --init-groups --"
    export USER=$user LOGNAME=$user HOME=$(getent passwd "$user" | cut -d: -f6)
    cd /
fi

# One job = n ranks started together; a fresh tag per job (the linger of
# the previous job's supervisor must not be measured as sharing).
script="$work_dir/ranks-job.sh"
cat >"$script" <<SCRIPT
#!/bin/sh
tag=job-\$\$-\$(date +%s%N)
i=0
while [ \$i -lt $n ]; do
    case "\$1" in
    cairn) CAIRN_JOIN_LINGER_MS=200 "$bin" run --join=\$tag "$img" -- true & ;;
    ch-run) ch-run --join --join-ct=$n --join-tag=\$tag "$img" -- true & ;;
    esac
    i=\$((i + 1))
done
wait
SCRIPT
chmod 0755 "$script"
$as "$script" cairn || die "cairn ranks failed"
$as "$script" ch-run || die "ch-run ranks failed"

export BENCH_RUNS=${BENCH_RUNS:-10}
cairn_t=$(hyperfine_median ranks-cairn $as "$script" cairn)
chrun_t=$(hyperfine_median ranks-chrun $as "$script" ch-run)
report ranks "$n ranks --join, all done (vs ch-run --join)" "$cairn_t" ch-run "$chrun_t"
