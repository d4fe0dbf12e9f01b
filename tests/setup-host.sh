#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine for cairn's tests (idempotent; run as root):
#  - the Debian packages the tests use as oracles and fixtures,
#  - an ordinary user, cairn-test, that integration tests run cairn as, and
#    a second one, cairn-evil, that plays the hostile neighbour,
#  - /dev/fuse usable by that user (it is root-only on some fresh machines).
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "tests/setup-host.sh: must run as root (it installs packages and creates a user)" >&2
    exit 1
fi

# Every package the test suite and the README's main job need. Keep sorted.
packages=(
    acl
    apache2-utils
    attr
    bubblewrap
    buildah
    busybox-static
    charliecloud
    debootstrap
    docker-registry
    fuse3
    gcc
    gcc-multilib
    hyperfine
    iproute2
    libcap2-bin
    libopenmpi-dev
    munge
    openmpi-bin
    openssl
    procps
    python3
    python3-cryptography
    python3-jwt
    python3-lark
    skopeo
    slurm-wlm
    squashfs-tools
    squashfs-tools-ng
    squashfuse
    strace
    uidmap
    umoci
    util-linux
    zstd
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-host: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

user=${CAIRN_TEST_USER:-cairn-test}
# The second user plays the hostile neighbour in the security tests.
user2=${CAIRN_TEST_USER2:-cairn-evil}
for u in "$user" "$user2"; do
    if ! getent passwd "$u" >/dev/null; then
        useradd --create-home --shell /bin/bash "$u"
    fi
done

# The FUSE path needs /dev/fuse openable by the ordinary user.
if [ -e /dev/fuse ]; then
    chmod 0666 /dev/fuse
fi

# Unprivileged user namespaces: Debian 12 allows them by default, but some
# hardened hosts switch them off. Say so plainly instead of failing later.
if [ -e /proc/sys/kernel/unprivileged_userns_clone ] &&
    [ "$(cat /proc/sys/kernel/unprivileged_userns_clone)" != 1 ]; then
    sysctl -qw kernel.unprivileged_userns_clone=1 || echo "setup-host: cannot enable unprivileged user namespaces" >&2
fi
echo "setup-host: ready (test users $user, $user2)"
