#!/usr/bin/env bash
# `make deb`: dist/updaterd_VERSION_ARCH.deb for the Debian release this machine runs (SPEC
# section 12), with Debian's own tools (dpkg-deb, lintian). updaterd and its dependencies go into
# a private virtual environment, /usr/lib/updaterd, on the system's own python3, built at its
# final path inside the package tree; then every trace of the build folder is rewritten or
# removed (script shebangs, activate scripts, pyvenv.cfg's command, direct_url.json) and checked
# gone. No bytecode is shipped: the postinst compiles it, the prerm removes it.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${DEB_PYTHON:-/usr/bin/python3}
work=${DEB_WORK:-build/deb}
UPDATERD_DEPS_ONLY=1 UPDATERD_EXTRA_DEPS="strip:binutils objdump:binutils dpkg-deb:dpkg" \
    bash scripts/deps.sh
if ! "$PY" -c 'import ensurepip' 2>/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "make deb: installing python3-venv (apt-get)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            python3-venv >/dev/null
    else
        echo "make deb: needs python3-venv: sudo apt-get install python3-venv" >&2
        exit 1
    fi
fi

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' ctl/updaterctl/_version.py)
arch=$(dpkg --print-architecture)
pyver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
pynext=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1] + 1}")')
root="$work/root"
rm -rf "$work"
mkdir -p "$root/DEBIAN" dist
work=$(cd "$work" && pwd)
root="$work/root"
lib=/usr/lib/updaterd
venv="$root$lib"

echo "make deb: updaterd $version for $arch on python $pyver ($PY)" >&2
"$PY" -m venv "$venv"
"$venv/bin/pip" install -q --no-compile --no-cache-dir --disable-pip-version-check \
    --use-pep517 . >&2
"$venv/bin/pip" uninstall -q -y pip setuptools >&2 || true
# the build folder must leave no trace in what is shipped
for f in "$venv"/bin/*; do
    [ -f "$f" ] && [ ! -L "$f" ] || continue
    sed -i "1s|^#!$venv/bin/python.*|#!$lib/bin/python3|" "$f"
done
# only updaterd's own commands (the dependencies' httpx, idna, pysemver... are not needed)
find "$venv/bin" -type f ! -name updaterd ! -name updaterctl -delete
rm -f "$venv/lib64" "$venv/.gitignore"  # Python 3.13's venv writes a .gitignore
# the venv's interpreter: the system's, by a relative link (usr/lib/updaterd/bin -> usr/bin)
ln -sfn ../../../bin/python3 "$venv/bin/python3"
sed -i "/^command = /d" "$venv/pyvenv.cfg"
rm -rf "$venv/share"  # the pages and completions go where man and the shells look, below
find "$venv" -name direct_url.json -delete
find "$venv" -name __pycache__ -type d -prune -exec rm -rf {} +
# what dh_strip and dh_fixperms would do: no debugging symbols, no executable bit on data
find "$venv" -name '*.so*' -type f -exec strip --strip-unneeded --remove-section=.comment \
    --remove-section=.note {} +
find "$venv/lib" -type f -perm /111 ! -name '*.so*' -exec chmod a-x {} +
sed -i "/direct_url.json/d;/__pycache__/d" "$venv"/lib/python*/site-packages/*.dist-info/RECORD
if grep -rlI --exclude=RECORD "$work" "$venv" >/dev/null; then
    echo "make deb: the build folder is still named in:" >&2
    grep -rlI --exclude=RECORD "$work" "$venv" >&2
    exit 1
fi

install -d "$root/usr/bin"
ln -s "../lib/updaterd/bin/updaterd" "$root/usr/bin/updaterd"
ln -s "../lib/updaterd/bin/updaterctl" "$root/usr/bin/updaterctl"
install -d "$root/usr/lib/systemd/system"
for unit in updaterd.service updaterd-once.service updaterd-once.timer \
        updaterd-feed-resign@.service updaterd-feed-resign@.timer \
        updaterd-rollout-resign@.service updaterd-rollout-resign@.timer; do
    sed 's|/usr/local/bin/updaterd|/usr/bin/updaterd|g' "contrib/systemd/$unit" \
        > "$root/usr/lib/systemd/system/$unit"
    chmod 0644 "$root/usr/lib/systemd/system/$unit"
done
install -D -m 0644 contrib/systemd/updaterd.sysusers "$root/usr/lib/sysusers.d/updaterd.conf"
install -D -m 0644 contrib/systemd/updaterd.tmpfiles "$root/usr/lib/tmpfiles.d/updaterd.conf"
for page in man/updaterctl.1 man/updaterd.toml.5 man/updaterd.8; do
    section=${page##*.}
    install -d "$root/usr/share/man/man$section"
    gzip -9n < "$page" > "$root/usr/share/man/man$section/$(basename "$page").gz"
done
install -D -m 0644 contrib/completion/updaterctl.bash \
    "$root/usr/share/bash-completion/completions/updaterctl"
install -D -m 0644 contrib/completion/_updaterctl "$root/usr/share/zsh/vendor-completions/_updaterctl"
install -D -m 0644 contrib/deb/updaterd.toml "$root/etc/updaterd/updaterd.toml"
doc="$root/usr/share/doc/updaterd"
install -d "$doc/examples"
install -m 0644 contrib/config/*.toml "$doc/examples/"
install -m 0644 contrib/deb/copyright "$doc/copyright"
stamp=$(git log -1 --format=%ct 2>/dev/null || date +%s)
printf 'updaterd (%s) unstable; urgency=medium\n\n  * updaterd %s: what changed is in /usr/share/doc/updaterd/NEWS.md.gz.\n\n -- %s  %s\n' \
    "$version" "$version" "updaterd developers <updaterd@example.com>" \
    "$(date -R -u -d "@${SOURCE_DATE_EPOCH:-$stamp}")" | gzip -9n > "$doc/changelog.gz"
gzip -9n < CHANGELOG.md > "$doc/NEWS.md.gz"
install -m 0755 contrib/deb/postinst contrib/deb/prerm contrib/deb/postrm "$root/DEBIAN/"
install -D -m 0644 contrib/deb/lintian-overrides "$root/usr/share/lintian/overrides/updaterd"
echo /etc/updaterd/updaterd.toml > "$root/DEBIAN/conffiles"
find "$root" -type d -exec chmod 0755 {} +

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
# glibc: the newest symbol version the compiled extensions ask for
glibc=$(find "$venv" -name '*.so*' -type f -exec objdump -T {} + 2>/dev/null \
        | sed -n 's/.*GLIBC_\([0-9.]*\).*/\1/p' | sort -V | tail -n 1)
cat > "$root/DEBIAN/control" <<EOF
Package: updaterd
Version: $version
Architecture: $arch
Maintainer: updaterd developers <updaterd@example.com>
Installed-Size: $size
Depends: python3 (>= $pyver~), python3 (<< $pynext), libc6 (>= ${glibc:-2.28}), init-system-helpers (>= 1.54)
Section: admin
Priority: optional
Homepage: https://github.com/updaterd/updaterd
Description: keeps applications up to date from signed release feeds
 updaterd is a daemon that checks each application's release feed (a signed
 feed on any static web host, GitHub Releases or a local folder), downloads
 and verifies new versions (digests, minisign signatures), installs each into
 its own folder, switches atomically, restarts the application, checks its
 health and rolls back by itself. updaterctl drives it over a local socket.
 .
 This package carries updaterd and its Python dependencies in a private
 virtual environment on the system's python3.
EOF
out="dist/updaterd_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >&2
echo "$out"
