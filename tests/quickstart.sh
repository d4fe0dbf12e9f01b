#!/usr/bin/env bash
# The README's first command: on a fresh Debian 12 machine (as root), set the
# host up, build cairn, build a default three-layer OCI image offline with
# umoci (busybox, then an application layer, then a layer that deletes and
# adds files), and, as the ordinary user cairn-test, flatten it into one
# squashfs file with `cairn import` and run a command in it with `cairn run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup-host.sh
source tests/cargo-env.sh
cargo build --release --locked -q
user=${CAIRN_TEST_USER:-cairn-test}
home=$(getent passwd "$user" | cut -d: -f6)

work=/var/tmp/cairn-quickstart
rm -rf "$work"
mkdir -p "$work"
chmod 0755 "$work"
install -m 0755 "$cairn_target_dir/release/cairn" "$work/cairn"

echo "== building a three-layer OCI image in $work/oci (umoci)"
cd "$work"
umoci init --layout oci
umoci new --image oci:latest
umoci unpack --image oci:latest bundle >/dev/null
root=bundle/rootfs
mkdir -p "$root"/{bin,dev,etc,home,proc,sys,tmp,root}
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
    # busybox lists itself; linking it would replace the binary with a loop
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'NAME="cairn quickstart"\nID=cairn-quickstart\n' >"$root/etc/os-release"
echo "this file is deleted by the top layer" >"$root/etc/motd"
chmod 1777 "$root/tmp"
umoci repack --refresh-bundle --image oci:latest bundle >/dev/null
mkdir -p "$root/opt/app"
printf '#!/bin/sh\necho "hello from $(cat /etc/os-release | head -1), layer 2"\n' >"$root/opt/app/hello"
chmod 0755 "$root/opt/app/hello"
umoci repack --refresh-bundle --image oci:latest bundle >/dev/null
rm "$root/etc/motd"
echo "added by layer 3" >"$root/opt/app/data.txt"
umoci repack --refresh-bundle --image oci:latest bundle >/dev/null
umoci config --image oci:latest --config.env GREETING=hello --config.workingdir /opt/app \
    --config.cmd /opt/app/hello
rm -rf bundle
chmod -R a+rX oci

# Warm runs off (CAIRN_WARM_LINGER=0): the script leaves no server behind.
as_user() {
    setpriv --reuid="$user" --regid="$user" --init-groups -- \
        env -i HOME="$home" USER="$user" PATH=/usr/bin:/bin CAIRN_WARM_LINGER=0 "$@"
}

echo "== cairn import oci:$work/oci:latest (as $user)"
as_user "$work/cairn" import "oci:$work/oci:latest" -o "$home/quickstart.sqfs"
as_user "$work/cairn" inspect "$home/quickstart.sqfs"

echo "== cairn run $home/quickstart.sqfs (as $user)"
as_user "$work/cairn" run "$home/quickstart.sqfs"
as_user "$work/cairn" run "$home/quickstart.sqfs" -- /bin/sh -c \
    'id; echo "GREETING=$GREETING cwd=$(pwd)"; ls /opt/app; test ! -e /etc/motd && echo "motd whited out"'
