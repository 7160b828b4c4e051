#!/usr/bin/env bash
# `make test-systemd`: a Debian 12 root file system for systemd-nspawn, in build/nspawn/rootfs
# (ignored by git). Built once with debootstrap (about a minute) and reused; rebuilt when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=build/nspawn/rootfs
[ -x "$root/usr/lib/systemd/systemd" ] && [ -e "$root/.complete" ] && exit 0
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
mirror=${mirror:-http://deb.debian.org/debian}
rm -rf "$root"
mkdir -p "$(dirname "$root")"
echo "nspawn-rootfs: debootstrap bookworm from $mirror into $root" >&2
debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,python3,python3-venv,ca-certificates,procps,socat,passwd \
    bookworm "$root" "$mirror" >/dev/null
touch "$root/.complete"
