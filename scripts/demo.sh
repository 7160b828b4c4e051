#!/usr/bin/env bash
# `make demo`: a tiny app in three versions, a signed local feed, and updaterd --once walking
# through install, update, automatic rollback (1.2.0 fails its health check) and manual rollback.
# Everything lives under ./demo-run; no root needed.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
demo="$here/demo-run"
rm -rf "$demo"
mkdir -p "$demo"/{build,feed}
cd "$demo"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

build() {  # build VERSION HEALTHY
    local v=$1 healthy=$2 dir="build/hello-$1"
    mkdir -p "$dir/bin"
    if [ "$healthy" = yes ]; then
        printf '#!/bin/sh\necho "hello from version %s"\n' "$v" > "$dir/bin/hello"
    else
        printf '#!/bin/sh\necho "version %s is broken" >&2\nexit 1\n' "$v" > "$dir/bin/hello"
    fi
    chmod +x "$dir/bin/hello"
    tar -C build -czf "build/hello-$v-linux-$(uname -m).tar.gz" "hello-$v"
}

say "A release engineer makes a signing key and publishes hello 1.0.0 to a feed folder"
run updaterd keygen --out demo-key
build 1.0.0 yes
run updaterd publish --feed feed --key demo-key.key --app hello --version 1.0.0 \
    "build/hello-1.0.0-linux-$(uname -m).tar.gz"

cat > updaterd.toml <<TOML
[daemon]
state_dir = "$demo/state"
cache_dir = "$demo/cache"
lock_file = "$demo/updaterd.lock"
socket = "$demo/updaterd.sock"

[apps.hello]
source = "directory"
path = "$demo/feed"
public_keys = ["$(sed -n 2p demo-key.pub)"]
prefix = "$demo/opt/hello"
health_check = ["bin/hello"]
health_timeout = "10s"
TOML
say "The host's configuration (updaterd.toml) trusts only that key"
run updaterd --config updaterd.toml check-config

say "First run: updaterd installs 1.0.0"
run updaterd --config updaterd.toml --once
run ls -l opt/hello
run opt/hello/bin/hello

say "1.1.0 is published; the next run updates, atomically"
build 1.1.0 yes
run updaterd publish --feed feed --key demo-key.key --app hello --version 1.1.0 \
    "build/hello-1.1.0-linux-$(uname -m).tar.gz"
run updaterd --config updaterd.toml --once
run opt/hello/bin/hello

say "1.2.0 is broken: its health check fails, updaterd rolls back by itself and blocks it"
build 1.2.0 no
run updaterd publish --feed feed --key demo-key.key --app hello --version 1.2.0 \
    "build/hello-1.2.0-linux-$(uname -m).tar.gz"
run updaterd --config updaterd.toml --once || echo "(exit $?: the update failed, as it should)"
run opt/hello/bin/hello
run updaterd --config updaterd.toml --once
echo "(1.2.0 is blocked: it is not tried again)"

say "Someone tampers with the feed: the signature check refuses it, nothing changes"
cp feed/manifest.json manifest.good
sed -i 's/"rollout": 100/"rollout": 99/' feed/manifest.json
run updaterd --config updaterd.toml --once || echo "(exit $?: refused, as it should)"
cp manifest.good feed/manifest.json

say "The operator rolls back to 1.0.0 by hand"
run updaterd --config updaterd.toml rollback hello
run opt/hello/bin/hello
run ls opt/hello/releases

say "History kept in the state file"
python3 - "$demo/state/hello/state.json" <<'PY'
import json, sys, time
s = json.load(open(sys.argv[1]))
for h in s["history"]:
    when = time.strftime("%H:%M:%S", time.localtime(h["at"]))
    print(f"  {when}  {h['action']:<12} {h['version']:<8} {h['reason']}")
print(f"  installed {s['installed']}, blocked {s['blocked']}, skipped {s['skipped']}")
PY
say "Done: everything is under $demo"
