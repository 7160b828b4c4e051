#!/usr/bin/env bash
# `make deps`: the Debian tools the tests run for real (nginx, minisign, b3sum, ...).
# Fast and silent when everything is there; as root on Debian it installs what is missing with
# apt-get; anywhere else it stops at once and prints the one command that would install it.
set -euo pipefail

# command:package pairs; the command is what the tests look for on PATH.
pairs=(nginx:nginx-light minisign:minisign b3sum:b3sum socat:socat mandoc:mandoc
       curl:curl zstd:zstd zip:zip unzip:unzip varnishd:varnish squid:squid
       apache2:apache2 caddy:caddy)
# Extra pairs for a target that needs more (make test-systemd adds systemd-nspawn and debootstrap);
# with UPDATERD_DEPS_ONLY=1 only those (make deb needs none of the tests' tools).
[ -n "${UPDATERD_DEPS_ONLY:-}" ] && pairs=()
pairs+=(${UPDATERD_EXTRA_DEPS:-})

missing=()
for pair in "${pairs[@]}"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "make deps: installing ${missing[*]} (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    exit 0
fi

echo "make deps: the tests need these Debian packages: ${missing[*]}" >&2
if command -v apt-get >/dev/null 2>&1; then
    echo "  run: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
else
    echo "  install them with your package manager, then run make test again" >&2
fi
exit 1
