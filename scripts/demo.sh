#!/usr/bin/env bash
# `make demo`: a tiny app in three versions, a signed local feed, and the updaterd daemon driven
# by updaterctl through install, update, automatic rollback (1.2.0 fails its health check), a
# tampered feed, and a manual rollback. Everything lives under ./demo-run; no root needed.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
demo="$here/demo-run"
rm -rf "$demo"
mkdir -p "$demo"/{build,feed,run}
cd "$demo"
arch="$(uname -m)"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
ctl() { printf '$ updaterctl %s\n' "$*"; updaterctl --socket "$demo/run/updaterd.sock" "$@"; }

build() {  # build VERSION HEALTHY
    local v=$1 healthy=$2 dir="build/hello-$1"
    mkdir -p "$dir/bin"
    if [ "$healthy" = yes ]; then
        printf '#!/bin/sh\necho "hello from version %s"\n' "$v" > "$dir/bin/hello"
    else
        printf '#!/bin/sh\necho "version %s is broken" >&2\nexit 1\n' "$v" > "$dir/bin/hello"
    fi
    chmod +x "$dir/bin/hello"
    tar -C build -czf "build/hello-$v-linux-$arch.tar.gz" "hello-$v"
}
publish() {  # publish VERSION
    run updaterd publish --feed feed --key demo-key.key --app hello --version "$1" \
        "build/hello-$1-linux-$arch.tar.gz"
}

say "A release engineer makes a signing key and publishes hello 1.0.0 to a feed folder"
run updaterd keygen --out demo-key
build 1.0.0 yes
publish 1.0.0

cat > updaterd.toml <<TOML
[daemon]
state_dir = "$demo/state"
cache_dir = "$demo/cache"
lock_file = "$demo/run/updaterd.lock"
socket = "$demo/run/updaterd.sock"

[apps.hello]
source = "directory"
path = "$demo/feed"
public_keys = ["$(sed -n 2p demo-key.pub)"]
prefix = "$demo/opt/hello"
health_check = ["bin/hello"]
health_timeout = "10s"
check_interval = "1h"
jitter = "0s"
TOML
say "The host trusts only that key; the daemon starts and installs 1.0.0 by itself"
run updaterd --config updaterd.toml check-config
updaterd --config updaterd.toml > daemon.log 2>&1 &
daemon_pid=$!
trap 'kill -TERM $daemon_pid 2>/dev/null; wait $daemon_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    [ -L opt/hello/current ] && break
    sleep 0.1
done
ctl status
run opt/hello/bin/hello

say "1.1.0 is published; updaterctl checks and updates now (the daemon would within the hour)"
build 1.1.0 yes
publish 1.1.0
ctl check hello
ctl update hello
run opt/hello/bin/hello

say "1.2.0 is broken: its health check fails, the daemon rolls back by itself and blocks it"
build 1.2.0 no
publish 1.2.0
ctl update hello || echo "(exit $?: the update failed, as it should)"
run opt/hello/bin/hello
ctl status hello

say "Someone tampers with the feed: the signature check refuses it, nothing changes"
cp feed/manifest.json manifest.good
sed -i 's/"rollout": 100/"rollout": 99/' feed/manifest.json
ctl check hello || echo "(exit $?: refused, as it should)"
cp manifest.good feed/manifest.json

say "The operator looks at the kept versions and rolls back to 1.0.0"
ctl list-backups hello
ctl rollback hello --to 1.0.0
run opt/hello/bin/hello
ctl history hello

say "Done: the daemon stops on SIGTERM; everything is under $demo"
