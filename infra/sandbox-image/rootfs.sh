#!/usr/bin/env bash
# Offline path of the sandbox base image: a Debian root filesystem made by debootstrap (variant
# minbase plus every package in packages.txt), ready for `docker import`. Needs root and the
# debootstrap package (apt-get install -y debootstrap); reaches only the Debian mirror.
#
#   rootfs.sh DIR                 DIR must not exist or be empty
#   CORRAL_DEBIAN_MIRROR=URL      mirror (default http://deb.debian.org/debian)
#
# Then: tar --numeric-owner -C DIR -c . | docker import - corral-sandbox-base:TAG
#       docker build --build-arg BASE=corral-sandbox-base:TAG -t corral-sandbox:TAG infra/sandbox-image
# (`corral-dev image` does all three and removes DIR.)
set -euo pipefail

suite=bookworm
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
target=${1:?usage: rootfs.sh DIR}
mirror=${CORRAL_DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "$(id -u)" -ne 0 ]; then
    echo "rootfs.sh: debootstrap needs root" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "rootfs.sh: debootstrap is not installed: apt-get install -y debootstrap (as root)" >&2
    exit 1
fi

packages=$(grep -v -e '^#' -e '^[[:space:]]*$' "$here/packages.txt" | paste -sd, -)
echo "rootfs.sh: debootstrap --variant=minbase --include=$packages $suite $target $mirror"
debootstrap --variant=minbase --include="$packages" "$suite" "$target" "$mirror"

# What the image does not need: downloaded packages, package lists, the build host's identity
# (docker provides resolv.conf, hosts and hostname to each container).
rm -rf "$target"/var/cache/apt/archives/*.deb "$target"/var/lib/apt/lists/*
rm -rf "$target"/var/log/bootstrap.log "$target"/var/cache/debconf/*-old "$target"/var/lib/dpkg/*-old
rm -f "$target/etc/resolv.conf" "$target/etc/hostname"  # never write through a symlink
touch "$target/etc/resolv.conf" "$target/etc/hostname"
echo "rootfs.sh: done ($(du -sh "$target" | cut -f1))"
