#!/usr/bin/env bash
# build: `cairn build` against `ch-image build` (Charliecloud) and
# `buildah bud`, the same Dockerfile and context, same run:
#   - cairn and ch-image as the ordinary user (cairn-test, when the suite
#     runs as root and the user exists), each with a cache or storage
#     directory of its own; ch-image with a git identity in the
#     environment (its build cache commits with git) and without --force:
#     Debian's ch-image (0.31) has no --force=seccomp, and its --force
#     installs fakeroot with apt-get, which needs a mirror; the apt-get of
#     the Dockerfile works without it (APT::Sandbox::User=root, a package
#     of root's files);
#   - buildah as root, vfs storage, --isolation chroot, --layers (its step
#     cache; off by default), its --root/--runroot/TMPDIR under $work_dir
#     and, in a mount namespace of its own, a private /var/lib, so that
#     root's global blob-info cache is neither used nor changed.
# The base: the MPI image fixture (tests/fixtures/mpi-image.sh: bookworm
# minbase with gcc and OpenMPI, about 600 MB), given to each the way it
# takes a local image offline: an OCI layout of its tree made with umoci
# (cairn and buildah: FROM oci:DIR:base) and a tarball of the same tree
# (`ch-image import`, part of ch-image's cold build). Made once, cached in
# $work_dir/build.
# The Dockerfile: a stage compiling a C program (16 files, gcc -O2); a
# stage installing a package with apt-get from a local file: repository
# (a .deb made here with dpkg-deb, so no network), then the program from
# the first stage and the app/ directory, last.
# Metrics, each cairn against the fastest peer (ratio cairn/peer; goals
# from the issue in brackets):
#   1. cold build: empty cache or storage, the base's import included
#      [<= 0.5x];
#   2. rebuild with nothing changed [<= 0.25 s absolute];
#   3. rebuild after an edit of app/settings.conf (the last COPY; each run
#      writes new content) [<= 0.3x].
# What each makes differs: cairn a squashfs image in its cache (the tree
# flattened and compressed), ch-image a directory in its storage (a
# squashfs would take a `ch-convert` more), buildah an image in its
# storage (vfs: every layer a full copy of the tree).
#
# Knobs: BENCH_RUNS / BENCH_WARMUP (hyperfine; default 3 / 0 here),
# BENCH_COLD_RUNS (default BENCH_RUNS), CAIRN_FIXTURES (where the fixture
# is cached), BENCH_USER (default cairn-test).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

suite=build
export BENCH_RUNS=${BENCH_RUNS:-3} BENCH_WARMUP=${BENCH_WARMUP:-0}
cold_runs=${BENCH_COLD_RUNS:-$BENCH_RUNS}
[ -x "$cairn" ] || die "no cairn binary at $cairn (cargo build --release)"
[ "$(id -u)" = 0 ] || die "the build suite needs root (buildah, umoci unpack of the base)"
for t in buildah ch-image umoci unsquashfs dpkg-deb dpkg-scanpackages gcc hyperfine; do
    command -v "$t" >/dev/null || die "missing $t"
done

base=$work_dir/build
mkdir -p "$base"
chmod 0755 "$base"

# The base image, from the MPI fixture (built by its script if missing:
# a debootstrap, minutes, the only step that needs a Debian mirror).
fixture=$("$repo_dir/tests/fixtures/mpi-image.sh" "${CAIRN_FIXTURES:-/var/tmp/cairn-fixtures}" "$cairn") ||
    die "no MPI fixture (tests/fixtures/mpi-image.sh)"
oci=$base/base-oci
if [ "$(cat "$base/base.done" 2>/dev/null)" != "$fixture" ]; then
    echo "making the base (OCI layout and tarball) from $fixture"
    rm -rf "$oci" "$base/base.tar" "$base/bundle" "$base/base.done"
    umoci init --layout "$oci" >/dev/null
    umoci new --image "$oci:base" >/dev/null
    umoci config --image "$oci:base" \
        --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin >/dev/null
    umoci unpack --image "$oci:base" "$base/bundle" >/dev/null
    rm -rf "$base/bundle/rootfs"
    unsquashfs -q -no-progress -d "$base/bundle/rootfs" "$fixture" >/dev/null
    umoci repack --image "$oci:base" "$base/bundle" >/dev/null
    umoci gc --layout "$oci"
    tar -C "$base/bundle/rootfs" -cf "$base/base.tar" .
    rm -rf "$base/bundle"
    chmod -R a+rX "$oci" "$base/base.tar"
    echo "$fixture" >"$base/base.done"
fi
echo "base: $fixture ($(du -sh --apparent-size "$base/base.tar" | cut -f1) tree), oci:$oci:base"

# The context (one copy per builder, so that one's edits are not
# another's): src/*.c, the apt repository, app/.
ctx0=$base/ctx
if [ ! -f "$ctx0/.done" ]; then
    rm -rf "$ctx0"
    mkdir -p "$ctx0/src" "$ctx0/repo" "$ctx0/app" "$base/deb"
    for i in $(seq -w 1 15); do
        {
            echo "#include <stdint.h>"
            echo "uint64_t f$i(uint64_t x);"
            for j in $(seq 1 40); do
                echo "static uint64_t g${i}_$j(uint64_t x) { for (int k = 0; k < $j; k++) x = x * 6364136223846793005u + $j; return x ^ (x >> $((j % 31 + 1))); }"
            done
            echo "uint64_t f$i(uint64_t x) {"
            for j in $(seq 1 40); do echo "    x = g${i}_$j(x);"; done
            echo "    return x; }"
        } >"$ctx0/src/f$i.c"
    done
    {
        echo "#include <stdint.h>"
        echo "#include <stdio.h>"
        for i in $(seq -w 1 15); do echo "uint64_t f$i(uint64_t x);"; done
        echo "int main(void) { uint64_t x = 1;"
        for i in $(seq -w 1 15); do echo "    x = f$i(x);"; done
        echo '    printf("hello %llu\n", (unsigned long long)x); return 0; }'
    } >"$ctx0/src/main.c"
    # The package: 4 MB of data files and a program, Architecture all.
    pkg=$base/deb/cairn-bench-data
    rm -rf "$pkg"
    mkdir -p "$pkg/DEBIAN" "$pkg/usr/share/cairn-bench" "$pkg/usr/bin"
    python3 - "$pkg/usr/share/cairn-bench" <<'PY'
import hashlib, sys
for i in range(200):
    h = hashlib.sha256(str(i).encode()).hexdigest()
    lines = []
    while sum(map(len, lines)) < 20000:
        h = hashlib.sha256(h.encode()).hexdigest()
        lines.append(f"{i:03d} {h} {h[:32]}\n")
    open(f"{sys.argv[1]}/{i:03d}.txt", "w").write("".join(lines))
PY
    printf '#!/bin/sh\necho cairn-bench-data\n' >"$pkg/usr/bin/cairn-bench-data"
    chmod 0755 "$pkg/usr/bin/cairn-bench-data"
    cat >"$pkg/DEBIAN/control" <<'EOF'
Package: cairn-bench-data
Version: 1.0
Architecture: all
Maintainer: cairn bench <bench@localhost>
Description: data files for cairn's build benchmark
EOF
    dpkg-deb --root-owner-group -Zgzip --build "$pkg" "$ctx0/repo/cairn-bench-data_1.0_all.deb" >/dev/null
    (cd "$ctx0/repo" && dpkg-scanpackages -m . /dev/null 2>/dev/null >Packages)
    for i in $(seq 1 20); do
        head -c 4096 /dev/zero | tr '\0' "$(printf "\\$(printf '%03o' $((96 + i)))")" >"$ctx0/app/file$i.txt"
    done
    echo "setting=0" >"$ctx0/app/settings.conf"
    cat >"$ctx0/Dockerfile.in" <<'EOF'
FROM @BASE@ AS build
COPY src/ /src/
RUN cd /src && gcc -O2 -o hello *.c && ./hello

FROM @BASE@
COPY repo/ /opt/repo/
RUN echo 'deb [trusted=yes] file:/opt/repo ./' >/etc/apt/sources.list.d/bench.list \
    && apt-get -qq -o Dir::Etc::SourceList=/etc/apt/sources.list.d/bench.list -o Dir::Etc::SourceParts=- -o APT::Sandbox::User=root update \
    && apt-get -qq -o Dir::Etc::SourceList=/etc/apt/sources.list.d/bench.list -o Dir::Etc::SourceParts=- -o APT::Sandbox::User=root install -y --no-install-recommends cairn-bench-data >/dev/null \
    && rm -rf /var/lib/apt/lists/* && cairn-bench-data
COPY --from=build /src/hello /usr/local/bin/hello
COPY app/ /app/
CMD ["/usr/local/bin/hello"]
EOF
    touch "$ctx0/.done"
fi

user=${BENCH_USER:-cairn-test}
bench_cairn_for_user
bench_as_user "$user"
owner=$(id -un)
[ -n "$as" ] && owner=$user
out=$base/out
rm -rf "$out"
mkdir -p "$out/run"
chmod 0755 "$out" "$out/run"
for tool in cairn ch buildah; do
    cp -a "$ctx0" "$out/ctx-$tool"
done
sed "s|@BASE@|oci:$oci:base|" "$ctx0/Dockerfile.in" >"$out/ctx-cairn/Dockerfile"
sed "s|@BASE@|oci:$oci:base|" "$ctx0/Dockerfile.in" >"$out/ctx-buildah/Dockerfile"
sed "s|@BASE@|bench-base|" "$ctx0/Dockerfile.in" >"$out/ctx-ch/Dockerfile"
# The user's caches and storage: in a directory of theirs.
mkdir -p "$out/user"
chown -R "$owner" "$out/ctx-cairn" "$out/ctx-ch" "$out/user"

# One script per tool and metric (hyperfine runs each as one program:
# `$as SCRIPT` keeps its quoting). $1 of each: cold, same or edit.
edit='if [ "$1" = edit ]; then date +setting=%s%N >"$ctx/app/settings.conf"; fi'
cat >"$out/run/cairn.sh" <<EOF
#!/bin/sh
set -e
ctx=$out/ctx-cairn
[ "\$1" = cold ] && rm -rf $out/user/cairn-cache
$edit
CAIRN_CACHE=$out/user/cairn-cache exec $bin build -q -t bench \$ctx >/dev/null 2>&1
EOF
cat >"$out/run/ch.sh" <<EOF
#!/bin/sh
set -e
export PATH=/usr/bin:/bin USER=\${USER:-$owner} CH_IMAGE_STORAGE=$out/user/ch
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@localhost GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@localhost
ctx=$out/ctx-ch
if [ "\$1" = cold ]; then
    rm -rf $out/user/ch
    ch-image import $base/base.tar bench-base >/dev/null 2>&1
fi
$edit
exec ch-image build -t bench -f \$ctx/Dockerfile \$ctx >/dev/null 2>&1
EOF
cat >"$out/run/buildah.sh" <<EOF
#!/bin/sh
set -e
ctx=$out/ctx-buildah
b=$out/buildah
[ "\$1" = cold ] && rm -rf \$b
mkdir -p \$b/varlib \$b/tmp
$edit
export HOME=/root TMPDIR=\$b/tmp BUILDAH_ISOLATION=chroot
exec unshare --mount --propagation private sh -ec 'mount --bind "\$0" /var/lib && exec "\$@"' \$b/varlib \\
    buildah --storage-driver vfs --root \$b/root --runroot \$b/run \\
    bud --layers --isolation chroot -t bench -f \$ctx/Dockerfile \$ctx >/dev/null 2>&1
EOF
chmod 0755 "$out/run"/*.sh

# Each must build before anything is timed.
$as "$out/run/cairn.sh" cold || die "cairn build failed: run $out/run/cairn.sh cold by hand"
$as "$out/run/ch.sh" cold || die "ch-image build failed: run $out/run/ch.sh cold by hand"
"$out/run/buildah.sh" cold || die "buildah bud failed: run $out/run/buildah.sh cold by hand"

# fastest NAME1 VALUE1 NAME2 VALUE2: "NAME VALUE" of the smaller.
fastest() {
    python3 -c 'import sys; a=sys.argv[1:]; p=sorted(zip(map(float,a[1::2]),a[0::2]))[0]; print(p[1], p[0])' "$@"
}
measure() { # METRIC_LABEL MODE RUNS
    local label=$1 mode=$2 runs=$3 t_cairn t_ch t_buildah peer
    t_cairn=$(BENCH_RUNS=$runs hyperfine_median "build-$mode-cairn" $as "$out/run/cairn.sh" "$mode")
    t_ch=$(BENCH_RUNS=$runs hyperfine_median "build-$mode-ch" $as "$out/run/ch.sh" "$mode")
    t_buildah=$(BENCH_RUNS=$runs hyperfine_median "build-$mode-buildah" "$out/run/buildah.sh" "$mode")
    echo "  $mode: cairn ${t_cairn}s  ch-image ${t_ch}s  buildah ${t_buildah}s"
    read -r peer t_peer < <(fastest ch-image "$t_ch" buildah "$t_buildah")
    report "$suite" "$label (vs fastest: $peer)" "$t_cairn" "$peer" "$t_peer"
    last_cairn=$t_cairn
}
measure "cold build, base import included" cold "$cold_runs"
measure "rebuild, nothing changed" same "$BENCH_RUNS"
awk -v t="$last_cairn" 'BEGIN { printf "  nothing changed: cairn %.3f s, goal <= 0.25 s: %s\n", t, (t <= 0.25 ? "met" : "MISSED") }'
measure "rebuild, last COPY's file edited" edit "$BENCH_RUNS"

# What is left is big (buildah's vfs layers are whole copies of the tree).
rm -rf "$out/buildah" "$out/user"
