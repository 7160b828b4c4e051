#!/usr/bin/env bash
# `make test-systemd`: a stock Debian root file system for systemd-nspawn: Debian 12 in
# build/nspawn/rootfs, or with `trixie` as the argument Debian 13 in build/nspawn/rootfs-trixie
# (ignored by git): what a minimal server has (systemd, its own python3, man, bash completion),
# nothing of updaterd's; the tests install updaterd's package into copies of it. Built once with
# debootstrap (a minute or two) and reused; rebuilt when missing or when the list below changes.
set -euo pipefail
cd "$(dirname "$0")/.."
suite=${1:-bookworm}
case "$suite" in
    bookworm) root=build/nspawn/rootfs ;;
    trixie) root=build/nspawn/rootfs-trixie ;;
    *) echo "nspawn-rootfs: bookworm or trixie, not $suite" >&2; exit 2 ;;
esac
include=systemd,systemd-sysv,dbus,python3,ca-certificates,procps,socat,passwd,man-db,bash-completion,less
[ -x "$root/usr/lib/systemd/systemd" ] && [ "$(cat "$root/.complete" 2>/dev/null)" = "$include" ] \
    && exit 0
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
mirror=${mirror:-http://deb.debian.org/debian}
rm -rf "$root"
mkdir -p "$(dirname "$root")"
echo "nspawn-rootfs: debootstrap $suite from $mirror into $root" >&2
debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror" >/dev/null
echo "$include" > "$root/.complete"
