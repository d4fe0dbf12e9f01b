#!/usr/bin/env bash
# warm: warm runs (issue 16). A run of a squashfs image leaves its FUSE
# server (comm cairn-fuse) and mount for a linger; the next run of the same
# image by the same user enters it, so the page cache, dentries and the
# server's caches are warm. Measured on an image made by `cairn import` of
# the multi-layer bookworm OCI image the flatten suite builds (lib.sh's
# bench_layered_image: debootstrap minbase + python3 + a few packages, three
# layers; the output says when it fell back to busybox), unpacked once with
# unsquashfs for cairn's directory-image runs, everything as the ordinary
# user (cairn-test, via setpriv) when the suite runs as root, cairn and
# peers in the same run:
#   1. second and later `cairn run IMG.sqfs -- true` (one untimed priming
#      run, a linger longer than the suite) against `unshare -Urm true`
#      (goal <= 1.3x) and `cairn run DIR -- true` of the unpacked tree
#      (goal <= 1.1x); the first, cold run (CAIRN_WARM_LINGER=0, after
#      `cairn stop`) for reference. Each comparison in interleaved rounds
#      (bench/interleave.py: every command once per round, random order).
#   2. python3 importing 30 standard modules, warm, against the same command
#      under `ch-run DIR` where DIR is a kernel squashfs mount of the same
#      image that stays mounted for the whole suite (goal <= 1.05x); in the
#      same rounds, for reference, `ch-run` on a squashfuse_ll mount of the
#      image that stays mounted (what an ordinary user could keep warm
#      without cairn: the other FUSE server).
#   3. `find / -xdev -ls >/dev/null`, the same three (goal <= 1.1x).
#   4. N (64) concurrent `cairn run IMG -- true` (not --join), total wall
#      time, warm, against N concurrent `cairn run DIR -- true` (goal
#      <= 1.2x); how many cairn-fuse servers of the image existed during one
#      such burst started warm and one started cold (goal: 1).
#   5. VmRSS of the idle warm server (its pid from `cairn ps --json`), after
#      the priming run and after all the workloads (and once more past the
#      helper's 2 s idle trim, which drops the reader's caches), against squashfuse_ll
#      idle after one `find -ls` of its mount of the image.
# Every run is checked once before it is timed, and `cairn run --timings`
# must say "run": "warm" after the priming run and "cold" with the linger 0.
# At the end (or on failure) the user's warm mounts are stopped
# (`cairn stop --all --force`) and the kernel mount is unmounted.
#
# Knobs: BENCH_INTERLEAVED / BENCH_WARMUP (interleaved rounds; default 60 / 3),
# BENCH_WARM_CONCURRENT (64), BENCH_WARM_CONC_RUNS (interleaved rounds of
# the concurrent bursts, default 15), BENCH_WARM_LINGER
# (the linger of the measured warm runs, default 1800s), CAIRN_BENCH_USER.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

suite=warm
user=${CAIRN_BENCH_USER:-cairn-test}
export BENCH_INTERLEAVED=${BENCH_INTERLEAVED:-60} BENCH_WARMUP=${BENCH_WARMUP:-3}
conc=${BENCH_WARM_CONCURRENT:-64}
conc_runs=${BENCH_WARM_CONC_RUNS:-15}
# Every cairn run of the suite lingers this long unless told otherwise: the
# warm server then lives through the whole measurement.
export CAIRN_WARM_LINGER=${BENCH_WARM_LINGER:-1800s}

# --- The image: `cairn import` of the layered bookworm OCI image (root
# builds it), else of a busybox rootfs.
img=$work_dir/warm.sqfs
rootfs=$work_dir/warm-rootfs
if [ "$(id -u)" = 0 ]; then
    bench_layered_image
    src="oci:$bench_oci:$bench_oci_tag"
    stamp=$bench_oci/.done
else
    [ -f "$bench_oci/.done" ] || echo "warm: no layered image (building it needs root): a busybox rootfs" >&2
    if [ -f "$bench_oci/.done" ]; then
        src="oci:$bench_oci:$bench_oci_tag" stamp=$bench_oci/.done
    else
        bench_busybox_rootfs "$work_dir/startup-rootfs"
        src="dir:$work_dir/startup-rootfs" stamp=$work_dir/startup-rootfs/bin/busybox
    fi
fi
if [ ! -f "$img" ] || [ "$stamp" -nt "$img" ] || [ "$(cat "$img.src" 2>/dev/null)" != "$src" ]; then
    "$cairn" import "$src" -o "$img" >/dev/null || die "cairn import $src failed"
    chmod 0644 "$img"
    echo "$src" >"$img.src"
fi
if [ ! -f "$rootfs.done" ] || [ "$img" -nt "$rootfs.done" ]; then
    rm -rf "$rootfs" "$rootfs.done"
    unsquashfs -q -no-progress -d "$rootfs" "$img" >/dev/null || die "unsquashfs $img failed"
    chmod 0755 "$rootfs"
    touch "$rootfs.done"
fi
layers=$(python3 -c 'import json,sys
d=sys.argv[1]
try:
    idx=json.load(open(d+"/index.json"))
    m=[x for x in idx["manifests"] if x.get("annotations",{}).get("org.opencontainers.image.ref.name")==sys.argv[2]][0]
    print(len(json.load(open(d+"/blobs/sha256/"+m["digest"].split(":")[1]))["layers"]))
except (OSError, LookupError, ValueError):
    print(0)' "$bench_oci" "$bench_oci_tag" 2>/dev/null || echo 0)
[ "${src%%:*}" = oci ] || layers=1
kind=busybox
if [ -f "$rootfs/etc/debian_version" ]; then kind="debian $(cat "$rootfs/etc/debian_version")"; fi
echo "image: $img ($(du -h "$img" | cut -f1), $(find "$rootfs" | wc -l) entries, $kind," \
    "by cairn import of $src, $layers layers); directory image: $rootfs"

bench_cairn_for_user
uid=$(id -u)
if [ "$uid" = 0 ] && id "$user" >/dev/null 2>&1; then uid=$(id -u "$user"); fi
bench_as_user "$user"

# --- Helpers.
kmnt=$work_dir/warm-kmnt
smnt=$work_dir/warm-sqmnt
kernel="" poller=""
cleanup() {
    [ -z "$poller" ] || kill "$poller" 2>/dev/null || true
    $as "$bin" stop --all --force >/dev/null 2>&1 || true
    if [ -n "$kernel" ]; then umount "$kmnt" 2>/dev/null || umount -l "$kmnt" 2>/dev/null || true; fi
    if mounted "$smnt"; then $as fusermount3 -u "$smnt" 2>/dev/null || umount -l "$smnt" 2>/dev/null || true; fi
}
trap cleanup EXIT
# mounted DIR: something is mounted on DIR (root cannot stat a FUSE mount of
# the user's: mountpoint(1) would say no).
mounted() { awk -v d="$1" '$2 == d { found = 1 } END { exit !found }' /proc/self/mounts; }
# squashfuse_up: squashfuse_ll of $img on $smnt as the user, in the
# foreground of a background job ($sq its pid); fails, saying so, when it
# does not mount. squashfuse_down unmounts it and waits for the server.
squashfuse_up() {
    command -v squashfuse_ll >/dev/null || return 1
    mkdir -p "$smnt"
    [ -z "$as" ] || chown "$user" "$smnt"
    $as squashfuse_ll -f "$img" "$smnt" &
    sq=$!
    for _ in $(seq 100); do mounted "$smnt" && return 0; sleep 0.05; done
    kill "$sq" 2>/dev/null || true
    echo "warm: squashfuse_ll did not mount $img" >&2
    return 1
}
squashfuse_down() {
    $as fusermount3 -u "$smnt" || umount -l "$smnt"
    wait "$sq" || true
}

# servers: the pids of the cairn-fuse processes of the user serving $img
# (a server is a fork of `cairn run IMG`: IMG is in its command line).
servers() {
    local p
    for p in $(pgrep -u "$uid" -x cairn-fuse || true); do
        grep -qaF -- "$img" "/proc/$p/cmdline" 2>/dev/null && echo "$p"
    done
    return 0
}

# no_servers WHAT: waits (5 s at most) until no server of $img is left.
no_servers() {
    local _
    for _ in $(seq 100); do
        [ -z "$(servers)" ] && return 0
        sleep 0.05
    done
    die "$1: a server of $img is left: $(servers | tr '\n' ' ')"
}

# stop_warm: ends the warm mount of $img, and waits until its server is gone.
stop_warm() {
    $as "$bin" stop --force "$img" >/dev/null 2>&1 || $as "$bin" stop "$img" >/dev/null 2>&1 || true
    no_servers "cairn stop $img"
}

# run_kind [VAR=VALUE...]: "warm" or "cold", as `cairn run --timings` says.
run_kind() {
    $as env "$@" "$bin" run --timings "$img" -- true 2>&1 >/dev/null | python3 -c '
import json, sys
kind = "none"
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        try:
            kind = json.loads(line).get("run", "missing")
        except ValueError:
            pass
print(kind)'
}

# warm_pid: the pid of the user's warm server of $img, from `cairn ps --json`.
warm_pid() {
    $as "$bin" ps --json | python3 -c '
import json, os, sys
img = sys.argv[1]
def walk(v):
    if isinstance(v, dict):
        yield v
        for x in v.values():
            yield from walk(x)
    elif isinstance(v, list):
        for x in v:
            yield from walk(x)
text = sys.stdin.read()
try:
    docs = [json.loads(text)]
except ValueError:
    docs = [json.loads(l) for l in text.splitlines() if l.strip()]
found = [d for doc in docs for d in walk(doc) if "pid" in d]
mine = [d for d in found if any(isinstance(v, str) and (v == img or os.path.basename(img) in v) for v in d.values())]
pick = mine or found
print(pick[0]["pid"] if pick else "")' "$img"
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# rss_parts PID: the anonymous and file-backed parts of its RSS.
rss_parts() { awk '/^Rss(Anon|File):/ { printf "%s %s KiB ", $1, $2 }' "/proc/$1/status"; }

# --- Each must work before it is timed.
stop_warm
$as unshare -Urm true || die "unshare -Urm failed"
$as "$bin" run "$rootfs" -- true || die "cairn run DIR failed"
$as env CAIRN_WARM_LINGER=0 "$bin" run "$img" -- true || die "cairn run IMG (cold) failed"
no_servers "a run with CAIRN_WARM_LINGER=0"
k=$(run_kind CAIRN_WARM_LINGER=0)
[ "$k" = cold ] || echo "warm: WARNING: a run with CAIRN_WARM_LINGER=0 says run=$k, not cold" >&2
echo "check: a run with CAIRN_WARM_LINGER=0 says run=$k"
$as "$bin" run "$img" -- true || die "cairn run IMG failed"
k=$(run_kind)
echo "check: the run after a priming run says run=$k; cairn-fuse servers of the image: $(servers | wc -l)"
[ "$k" = warm ] || echo "warm: WARNING: the run after a priming run was not warm (run=$k)" >&2

# --- 1. `true`: cold, warm, directory image, unshare, in interleaved rounds
# (bench/interleave.py: each once per round, in a random order; the
# machine is shared and its load drifts). A run with a linger of 0 neither
# looks for the warm mount nor leaves one: it is cold though the warm
# server the priming run left is there for the warm runs.
stop_warm
$as "$bin" run "$img" -- true
declare -A t=()
while IFS='=' read -r name secs; do t[$name]=$secs; done < <(interleaved \
    "cold=$as env CAIRN_WARM_LINGER=0 $bin run $img -- true" \
    "warm=$as $bin run $img -- true" \
    "dir=$as $bin run $rootfs -- true" \
    "unshare=$as unshare -Urm true")
[ -n "${t[warm]:-}" ] && [ -n "${t[unshare]:-}" ] || die "the interleaved runs of true failed"
[ "$(servers | wc -l)" = 1 ] || echo "warm: WARNING: $(servers | wc -l) cairn-fuse servers of the image after the true runs" >&2
report $suite "run img.sqfs true, warm (vs unshare -Urm; goal <= 1.3)" "${t[warm]}" unshare "${t[unshare]}"
report $suite "run img.sqfs true, warm (vs cairn run DIR; goal <= 1.1)" "${t[warm]}" cairn-dir "${t[dir]}"
report $suite "run img.sqfs true, cold: linger 0 (vs unshare -Urm)" "${t[cold]}" unshare "${t[unshare]}"
report $suite "run img.sqfs true, cold: linger 0 (vs warm)" "${t[cold]}" warm "${t[warm]}"

# --- 5a. The idle warm server's memory right after a `true`.
stop_warm
$as "$bin" run "$img" -- true
sleep 1
pid=$(warm_pid) || die "cairn ps --json failed"
[ -n "$pid" ] && [ -r "/proc/$pid/status" ] || die "cairn ps --json names no live warm server of $img"
rss_true=$(rss_kib "$pid")
echo "warm server (cairn ps --json): pid $pid, comm $(cat "/proc/$pid/comm"), VmRSS $rss_true KiB after a true ($(rss_parts "$pid"))"

# --- 2, 3. python3 and find, warm, against ch-run on a kernel squashfs
# mount that stays mounted (root mounts it once, the user runs ch-run).
# The workloads, by name (${!w}): interleave.py and eval split them as a shell would.
# shellcheck disable=SC2034
py="/usr/bin/python3 -c 'import $bench_python_modules'"
# The walk's exit status is left out: the image's root-only directories
# (/root, /etc/ssl/private...) fail it alike on both sides, as the user;
# the entry counts of both are printed.
# shellcheck disable=SC2034
walk="/bin/sh -c '/usr/bin/find / -xdev -ls >/dev/null 2>&1; :'"
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$kmnt"
    if mounted "$kmnt"; then umount "$kmnt" || die "$kmnt: a mount is left from an earlier run"; fi
    mount -t squashfs -o loop,ro "$img" "$kmnt" || die "mount -t squashfs $img failed"
    kernel=1
else
    echo "warm: python and find against the kernel mount skipped (mounting needs root)" >&2
fi
workloads=()
for w in py walk; do
    if ! eval "\$as \"\$bin\" run \"\$img\" -- ${!w}"; then
        echo "warm: $w skipped: it fails in cairn run $img (not in this image?)" >&2
        continue
    fi
    if [ -n "$kernel" ] && ! eval "\$as ch-run \"\$kmnt\" -- ${!w}"; then
        die "ch-run $kmnt -- ${!w} failed"
    fi
    workloads+=("$w")
done
if [ -n "$kernel" ] && [[ " ${workloads[*]} " == *" walk "* ]]; then
    # Both see the same tree (entries under / on its own file system).
    n_cairn=$($as "$bin" run "$img" -- /bin/sh -c '/usr/bin/find / -xdev 2>/dev/null | wc -l')
    n_ch=$($as ch-run "$kmnt" -- /bin/sh -c '/usr/bin/find / -xdev 2>/dev/null | wc -l')
    echo "find / -xdev: $n_cairn entries in cairn, $n_ch in ch-run on the kernel mount"
fi
if [ -n "$kernel" ]; then
    # The unprivileged alternative, kept mounted through the rounds: a
    # reference, not a goal. Its runs are checked like the others.
    sqfuse=""
    if squashfuse_up; then
        sqfuse=1
        for w in "${workloads[@]}"; do
            eval "\$as ch-run \"\$smnt\" -- ${!w}" || die "ch-run $smnt -- ${!w} failed"
        done
    fi
    for w in "${workloads[@]}"; do
        declare -A m=()
        $as "$bin" run "$img" -- true
        while IFS='=' read -r name secs; do m[$name]=$secs; done < <(interleaved \
            "cairn=$as $bin run $img -- ${!w}" "chrun=$as ch-run $kmnt -- ${!w}" \
            ${sqfuse:+"sqfuse=$as ch-run $smnt -- ${!w}"})
        [ -n "${m[cairn]:-}" ] && [ -n "${m[chrun]:-}" ] || die "the interleaved runs of $w failed"
        case $w in
        py) label="python3 import 30 modules, warm" goal="goal <= 1.05" ;;
        walk) label="find / -xdev -ls, warm" goal="goal <= 1.1" ;;
        esac
        report $suite "$label (vs ch-run on kernel mount; $goal)" "${m[cairn]}" ch-run-kernel "${m[chrun]}"
        if [ -n "${m[sqfuse]:-}" ]; then
            report $suite "$label (vs ch-run on a squashfuse_ll mount kept mounted)" \
                "${m[cairn]}" ch-run-squashfuse "${m[sqfuse]}"
        fi
    done
    if [ -n "$sqfuse" ]; then squashfuse_down; fi
fi

# --- 5b. The idle warm server's memory after all of that (the same server
# unless the linger ran out), against squashfuse_ll idle after a walk.
sleep 1
pid2=$(warm_pid) || die "cairn ps --json failed"
[ -n "$pid2" ] && [ -r "/proc/$pid2/status" ] || die "cairn ps --json names no live warm server of $img"
[ "$pid2" = "$pid" ] || echo "warm: the warm server changed during the workloads: pid $pid, then $pid2" >&2
rss_work=$(rss_kib "$pid2")
echo "warm server: pid $pid2, VmRSS $rss_work KiB after all workloads ($(rss_parts "$pid2"))"
# Past the helper's idle trim (ns::warm::IDLE_TRIM, 2 s): the reader's
# caches dropped and malloc_trim'd; what a lingering mount keeps.
sleep 2.5
rss_trim=$(rss_kib "$pid2")
echo "warm server: pid $pid2, VmRSS $rss_trim KiB idle 3.5 s after all workloads ($(rss_parts "$pid2"))"
rss_sq=""
if squashfuse_up; then
    $as find "$smnt" -xdev -ls >/dev/null 2>&1 || true
    rss_sq=$(rss_kib "$sq")
    squashfuse_down
fi
if [ -n "$rss_sq" ]; then
    report $suite "idle warm server VmRSS after a true (vs squashfuse_ll after a walk)" "$rss_true" squashfuse_ll "$rss_sq" KiB
    report $suite "idle warm server VmRSS after all workloads (vs squashfuse_ll after a walk)" "$rss_work" squashfuse_ll "$rss_sq" KiB
    report $suite "idle warm server VmRSS 3.5 s after all workloads, trimmed (vs squashfuse_ll after a walk)" "$rss_trim" squashfuse_ll "$rss_sq" KiB
else
    echo "warm: idle warm server VmRSS: ${rss_true} KiB after a true, ${rss_work} KiB after all workloads, ${rss_trim} KiB idle 3.5 s later"
fi

# --- 4. $conc concurrent runs of one image (not --join), until all are done.
burst="$work_dir/warm-burst.sh"
cat >"$burst" <<SCRIPT
#!/bin/sh
# warm-burst.sh IMAGE N: N concurrent \`cairn run IMAGE -- true\`, until all are done.
pids=""
i=0
while [ \$i -lt \$2 ]; do
    "$bin" run "\$1" -- true &
    pids="\$pids \$!"
    i=\$((i + 1))
done
rc=0
for p in \$pids; do wait "\$p" || rc=1; done
exit \$rc
SCRIPT
chmod 0755 "$burst"
# count_burst: one burst as it is now (warm or cold), while a poller counts
# the image's cairn-fuse servers: the most at once and all seen, written
# to $servers_out.
servers_out=$work_dir/warm-servers
count_burst() {
    local out=$servers_out
    rm -f "$out" "$out.stop" "$out.ready"
    python3 - "$img" "$uid" "$out" <<'PY' &
import os, sys, time
img, uid, out = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3]
peak, seen = 0, set()
open(out + ".ready", "w").close()
while not os.path.exists(out + ".stop"):
    now = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.stat("/proc/" + d).st_uid != uid:
                continue
            with open("/proc/%s/comm" % d) as f:
                if f.read().strip() != "cairn-fuse":
                    continue
            with open("/proc/%s/cmdline" % d, "rb") as f:
                if img not in f.read().split(b"\0"):
                    continue
        except OSError:
            continue
        now += 1
        seen.add(d)
    peak = max(peak, now)
    time.sleep(0.002)
with open(out, "w") as f:
    f.write("%d %d\n" % (peak, len(seen)))
PY
    poller=$!
    # python3 takes a while to start (0.4 s here): the burst waits for it.
    for _ in $(seq 200); do [ -f "$out.ready" ] && break; sleep 0.05; done
    [ -f "$out.ready" ] || die "the server counter did not start"
    $as "$burst" "$img" "$conc" || die "$conc concurrent cairn runs failed"
    touch "$out.stop"
    wait "$poller"
    poller=""
}
stop_warm
count_burst
read -r cold_peak cold_seen <"$servers_out"
stop_warm
$as "$bin" run "$img" -- true
count_burst
read -r warm_peak warm_seen <"$servers_out"
$as "$burst" "$rootfs" "$conc" || die "$conc concurrent cairn run DIR failed"
declare -A b=()
while IFS='=' read -r name secs; do b[$name]=$secs; done < <(BENCH_INTERLEAVED=$conc_runs BENCH_WARMUP=1 interleaved \
    "warm=$as $burst $img $conc" "dir=$as $burst $rootfs $conc")
[ -n "${b[warm]:-}" ] && [ -n "${b[dir]:-}" ] || die "the interleaved bursts failed"
report $suite "$conc concurrent run img.sqfs true, warm, all done (vs $conc cairn run DIR; goal <= 1.2)" \
    "${b[warm]}" cairn-dir "${b[dir]}"
report $suite "$conc concurrent runs started warm: cairn-fuse servers at once (vs goal)" "$warm_peak" goal 1 " servers"
report $suite "$conc concurrent runs started warm: cairn-fuse servers seen (vs goal)" "$warm_seen" goal 1 " servers"
report $suite "$conc concurrent runs started cold: cairn-fuse servers at once (vs goal)" "$cold_peak" goal 1 " servers"
report $suite "$conc concurrent runs started cold: cairn-fuse servers seen (vs goal)" "$cold_seen" goal 1 " servers"

# --- The end: the user's warm mounts stopped, nothing of them left.
$as "$bin" stop --all --force >/dev/null || echo "warm: cairn stop --all --force failed" >&2
for _ in $(seq 100); do [ -z "$(servers)" ] && break; sleep 0.05; done
[ -z "$(servers)" ] || echo "warm: WARNING: servers left after cairn stop --all --force: $(servers | tr '\n' ' ')" >&2
