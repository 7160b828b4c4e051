#!/usr/bin/env bash
# `make test-fleet`: Debian's own Prometheus (2.42 in bookworm), unpacked into .fleet/ rather than
# installed, so that no service of the package starts on the machine. Fast when it is there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.fleet/prometheus
[ -x "$dest/usr/bin/prometheus" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    echo "make test-fleet: needs Debian's prometheus package (apt-get download prometheus)" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"  # apt's download user writes here
( cd "$work" && { apt-get download -qq prometheus 2>/dev/null || { apt-get update -qq && apt-get download -qq prometheus; }; } )
mkdir -p "$dest"
dpkg-deb -x "$work"/prometheus_*.deb "$dest"
"$dest/usr/bin/prometheus" --version | head -1
