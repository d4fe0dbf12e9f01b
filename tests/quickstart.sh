#!/usr/bin/env bash
# The README's first command: on a fresh Debian 12 machine (as root), set the
# host up, build cairn, make a default image, and run a command in it as the
# ordinary user cairn-test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup-host.sh
cargo build --release --locked -q
user=${CAIRN_TEST_USER:-cairn-test}

work=/var/tmp/cairn-quickstart
rm -rf "$work"
mkdir -p "$work/rootfs"/{bin,dev,etc,home,proc,sys,tmp,root}
chmod 0755 "$work"
install -m 0755 target/release/cairn "$work/cairn"
cp /bin/busybox "$work/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
    # busybox lists itself; linking it would replace the binary with a loop
    [ "$applet" = busybox ] || ln -sf busybox "$work/rootfs/bin/$applet"
done
printf 'NAME="cairn quickstart"\nID=cairn-quickstart\n' >"$work/rootfs/etc/os-release"
touch "$work/rootfs/etc/"{passwd,group,hosts,resolv.conf}
chmod 1777 "$work/rootfs/tmp"

echo "== cairn run $work/rootfs as $user"
setpriv --reuid="$user" --regid="$user" --init-groups -- \
    env -i HOME="/home/$user" USER="$user" PATH=/usr/bin:/bin \
    "$work/cairn" run "$work/rootfs" -- /bin/sh -c 'cat /etc/os-release; id; echo "hello from inside cairn"'
