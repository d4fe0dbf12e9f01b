# shellcheck shell=bash
# Helpers shared by the benchmark suites (sourced, not run).
# Every metric is measured for cairn and its peer in the same run and printed
# as one line:  metric  cairn  peer  ratio  (ratio = cairn / peer; < 1 is
# cairn faster for times). Lines also go to bench/results/SUITE.tsv.

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname "$bench_dir")
results_dir="$bench_dir/results"
mkdir -p "$results_dir"
# Inputs (rootfs trees, images) are big: keep them out of the repository.
work_dir=${CAIRN_BENCH_WORK:-/var/tmp/cairn-bench}
mkdir -p "$work_dir"
chmod 0755 "$work_dir"
# cairn's build (static glibc, fixed address), as the tests build it.
# shellcheck source=../tests/cargo-env.sh
source "$repo_dir/tests/cargo-env.sh"
cairn=${CAIRN_BIN:-$repo_dir/$cairn_target_dir/release/cairn}

die() { echo "bench: $*" >&2; exit 1; }

# The python workload of the read and warm suites: python3 -c "import $this".
# shellcheck disable=SC2034
bench_python_modules="os,sys,re,json,collections,functools,itertools,math,random,datetime,time,pathlib,subprocess,threading,socket,struct,hashlib,base64,logging,argparse,tempfile,shutil,glob,io,typing,dataclasses,enum,copy,pickle,csv"

# hyperfine_median NAME CMD... : median wall seconds of CMD over repeated runs.
# Spawned without a shell (-N, no shell startup in the figure) unless CMD
# needs one: a $(...), a ;, a pipe or redirection, an assignment first.
# (-N would pass `$(date` to the program as a word: a skopeo copy to such
# a reference "ran" in 10 ms.)
hyperfine_median() {
    local name=$1; shift
    local json="$work_dir/hf-$name.json" shell=(-N) first=${*%% *}
    if [[ "$*" == *[\$\;\|\&\<\>\`]* || "$first" == *=* ]]; then shell=(); fi
    hyperfine --style none --warmup "${BENCH_WARMUP:-3}" --min-runs "${BENCH_RUNS:-30}" \
        --export-json "$json" "${shell[@]}" -- "$*" >/dev/null
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"])' "$json"
}

# interleaved NAME=COMMAND...: each command's median wall seconds, measured
# in interleaved rounds (bench/interleave.py: every command once per round,
# in a random order), as "NAME=SECONDS" lines; BENCH_INTERLEAVED rounds
# (default 60) after BENCH_WARMUP. For comparisons of short commands whose ratio the
# machine's drift would bias if each ran its repetitions back to back.
interleaved() {
    python3 "$bench_dir/interleave.py" "${BENCH_INTERLEAVED:-60}" "${BENCH_WARMUP:-3}" "$@" |
        awk -F'\t' '{ print $1 "=" $2 }'
}

# bench_free_port: a TCP port free on 127.0.0.1 now.
bench_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# bench_registry_config STORAGE PORT [CERT KEY]: a docker-registry config
# serving STORAGE on 127.0.0.1:PORT (HTTPS with CERT and KEY if given).
bench_registry_config() {
    cat <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $1
http:
  addr: 127.0.0.1:$2
YML
    if [ -n "${3:-}" ]; then
        printf '  tls:\n    certificate: %s\n    key: %s\n' "$3" "$4"
    fi
}

# report SUITE METRIC CAIRN_VALUE PEER_NAME PEER_VALUE [UNIT]
report() {
    local suite=$1 metric=$2 cval=$3 peer=$4 pval=$5 unit=${6:-s}
    local ratio
    ratio=$(python3 -c 'import sys; c,p=float(sys.argv[1]),float(sys.argv[2]); print(f"{c/p:.3f}" if p else "inf")' "$cval" "$pval")
    printf '%-40s cairn=%s%s  %s=%s%s  ratio=%s\n' "$metric" "$cval" "$unit" "$peer" "$pval" "$unit" "$ratio"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$suite" "$metric" "$cval" "$peer" "$pval" "$ratio" "$unit" \
        >>"$results_dir/$suite.tsv"
}

# The peers and tools every suite may use, from Debian's packages.
bench_install_peers() {
    local pkgs=(bubblewrap charliecloud hyperfine squashfs-tools squashfs-tools-ng squashfuse
                fuse3 debootstrap umoci skopeo python3 busybox-static time buildah python3-lark
                dpkg-dev gcc)
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || die "missing packages ${missing[*]}: run bench/run as root once"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # The suites measure as the ordinary user (bench_as_user): on a fresh
    # machine, the tests' setup makes it (and /dev/fuse usable by it).
    # Without it a suite would measure root's runs and say nothing.
    if [ "$(id -u)" = 0 ] && ! id "${CAIRN_BENCH_USER:-cairn-test}" >/dev/null 2>&1; then
        CAIRN_TEST_USER=${CAIRN_BENCH_USER:-cairn-test} bash "$repo_dir/tests/setup-host.sh" >&2
    fi
}

# bench_busybox_applets DIR: busybox-static at DIR/bin/busybox with every
# applet linked beside it (busybox --list names busybox itself: skipped, a
# link over the binary would point at itself).
bench_busybox_applets() {
    local dir=$1 applet
    mkdir -p "$dir/bin"
    cp /bin/busybox "$dir/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"
    done
}

# bench_busybox_rootfs DIR: a busybox-static rootfs at DIR with the mount
# points every runtime wants, the /etc files runtimes bind over, /tmp 1777,
# readable by all. Made once: kept while DIR/bin/busybox exists.
bench_busybox_rootfs() {
    local root=$1
    [ -x "$root/bin/busybox" ] && return 0
    rm -rf "$root"
    mkdir -p "$root"/{bin,dev,etc,home,proc,root,run,sys,tmp,mnt,usr/bin,var/tmp}
    bench_busybox_applets "$root"
    echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
    echo 'root:x:0:' >"$root/etc/group"
    : >"$root/etc/hosts"
    : >"$root/etc/resolv.conf"
    chmod 1777 "$root/tmp"
    chmod -R a+rX "$root"
}

# bench_cairn_for_user: copies cairn where the ordinary user can execute
# it and sets $bin to that copy.
bench_cairn_for_user() {
    bin="$work_dir/cairn"
    cp "$cairn" "$bin"
    chmod 0755 "$bin"
}

# bench_as_user USER: when the suite runs as root and USER exists, sets $as
# to the prefix that runs a command as USER (setpriv: no PAM, no setuid
# helper), gives the suite USER's environment (setpriv keeps it; ch-run
# needs USER) and moves to /. Otherwise $as is empty: commands run as the
# caller. Call it in the suite's shell, not in $(...).
bench_as_user() {
    local user=$1
    as=""
    if [ "$(id -u)" = 0 ] && id "$user" >/dev/null 2>&1; then
        as="setpriv --reuid=$(id -u "$user") --regid=$(id -g "$user") --init-groups --"
        export USER=$user LOGNAME=$user HOME=$(getent passwd "$user" | cut -d: -f6)
        cd /
    else
        # ch-run refuses to start without USER (a cron or nohup shell may
        # have none).
        export USER=${USER:-$(id -un)}
    fi
}

# bench_debian_mirror: the Debian mirror apt already uses (deb822 or
# one-line sources; the apt sources may list other vendors first).
bench_debian_mirror() {
    local url
    url=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
        grep -oE 'https?://[^ ]*/debian/?' | grep -v security | head -n1)
    echo "${url:-http://deb.debian.org/debian}"
}

# bench_in_chroot ROOT CMD...: runs CMD in the chroot ROOT with /proc
# mounted and the host's resolver.
bench_in_chroot() {
    local root=$1; shift
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    mount -t proc proc "$root/proc"
    local rc=0
    chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive "$@" || rc=$?
    umount "$root/proc"
    return $rc
}

# The multi-layer OCI image the flatten and warm suites import, cached in
# $work_dir: debootstrap bookworm minbase as layer 1, python3 installed in a
# chroot as layer 2, a few more packages as layer 3 (umoci repack each
# time); a few hundred MB. With BENCH_FLATTEN_SMALL=1, or when debootstrap
# fails: busybox + a copy of the host's /usr/lib/python3* as layers (no
# python3 program). Its kind ("bookworm" or "small") is in $bench_oci/.done.
bench_oci=$work_dir/flatten-oci
bench_oci_tag=bench

bench_oci_debian() { # BUILD_DIR
    local bundle=$1/bundle rootfs=$1/bundle/rootfs
    umoci unpack --image "$bench_oci:$bench_oci_tag" "$bundle" >/dev/null
    debootstrap --variant=minbase bookworm "$rootfs" "$(bench_debian_mirror)" >"$work_dir/flatten-debootstrap.log" 2>&1 || return 1
    umoci repack --refresh-bundle --image "$bench_oci:$bench_oci_tag" "$bundle" >/dev/null
    bench_in_chroot "$rootfs" sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 >/dev/null' || return 1
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
    umoci repack --refresh-bundle --image "$bench_oci:$bench_oci_tag" "$bundle" >/dev/null
    bench_in_chroot "$rootfs" sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-pip ca-certificates less procps >/dev/null' || return 1
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
    umoci repack --refresh-bundle --image "$bench_oci:$bench_oci_tag" "$bundle" >/dev/null
}

bench_oci_small() { # BUILD_DIR
    local bundle=$1/bundle rootfs=$1/bundle/rootfs d
    umoci unpack --image "$bench_oci:$bench_oci_tag" "$bundle" >/dev/null
    mkdir -p "$rootfs"/{bin,etc,tmp,usr/lib}
    bench_busybox_applets "$rootfs"
    umoci repack --refresh-bundle --image "$bench_oci:$bench_oci_tag" "$bundle" >/dev/null
    for d in /usr/lib/python3*; do
        cp -a "$d" "$rootfs/usr/lib/"
        umoci repack --refresh-bundle --image "$bench_oci:$bench_oci_tag" "$bundle" >/dev/null
    done
}

# bench_oci_init: an empty layout with one empty image at $bench_oci.
bench_oci_init() {
    rm -rf "$bench_oci"
    umoci init --layout "$bench_oci" >/dev/null
    umoci new --image "$bench_oci:$bench_oci_tag" >/dev/null
}

# bench_layered_image: builds $bench_oci:$bench_oci_tag once (root: umoci
# unpack, chroot), and the tarball of the same rootfs ch-convert starts from
# ($work_dir/flatten-rootfs.tar). Suites running at once build it once.
bench_layered_image() {
    [ -f "$bench_oci/.done" ] && return 0
    [ "$(id -u)" = 0 ] || die "building $bench_oci needs root (umoci unpack, chroot)"
    (
        flock 9
        [ -f "$bench_oci/.done" ] && exit 0
        local build_dir=$work_dir/flatten-build kind=bookworm
        rm -rf "$build_dir"
        mkdir -p "$build_dir"
        bench_oci_init
        if [ "${BENCH_FLATTEN_SMALL:-0}" = 1 ] || ! bench_oci_debian "$build_dir"; then
            [ "${BENCH_FLATTEN_SMALL:-0}" = 1 ] ||
                echo "bench: building the debian image failed (see $work_dir/flatten-debootstrap.log): using busybox + host python" >&2
            kind=small
            rm -rf "$build_dir"
            mkdir -p "$build_dir"
            bench_oci_init
            bench_oci_small "$build_dir"
        fi
        umoci gc --layout "$bench_oci"
        rm -rf "$build_dir/bundle"
        umoci unpack --image "$bench_oci:$bench_oci_tag" "$build_dir/ref" >/dev/null
        tar -C "$build_dir/ref/rootfs" -cf "$work_dir/flatten-rootfs.tar" .
        rm -rf "$build_dir"
        echo "$kind" >"$bench_oci/.done"
    ) 9>"$work_dir/flatten-oci.lock"
}
