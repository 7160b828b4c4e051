#!/usr/bin/env bash
# `make test-power`: a Debian kernel and a small initrd for qemu, in build/power/boot (ignored by
# git). Built once and reused; rebuilt when missing. Debian's own initrd brings every driver and
# takes a minute to start under TCG; this one loads the five modules a virtio disk with ext4
# needs, mounts it and hands over to the root file system's /power/init.
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/power/boot
[ -e "$out/.complete" ] && exit 0
rm -rf "$out"
mkdir -p "$out/deb" "$out/initrd/bin" "$out/initrd/modules"
pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
[ -n "$pkg" ] || { echo "power-kernel: apt-cache knows no linux-image-amd64 (run apt-get update)" >&2; exit 1; }
echo "power-kernel: $pkg into $out" >&2
(cd "$out/deb" && apt-get download -q "$pkg" >/dev/null 2>&1) \
    || (cd "$out/deb" && apt-get download "$pkg")
dpkg-deb -x "$out"/deb/*.deb "$out/deb/x"
cp "$out"/deb/x/boot/vmlinuz-* "$out/vmlinuz"
mods=$(echo "$out"/deb/x/lib/modules/*/kernel)
# load order: each module after the ones it needs
for m in lib/crc16 crypto/crc32c_generic fs/mbcache fs/jbd2/jbd2 fs/ext4/ext4 \
         drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev \
         drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci drivers/block/virtio_blk; do
    cp "$mods/$m.ko" "$out/initrd/modules/"
    echo "$(basename "$m").ko" >> "$out/initrd/modules/order"
done
cp "$(command -v busybox)" "$out/initrd/bin/busybox"
cat > "$out/initrd/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc 2>/dev/null || { mkdir -p /proc && mount -t proc proc /proc; }
for m in $(cat /modules/order); do insmod "/modules/$m"; done
mkdir -p /dev /newroot
mount -t devtmpfs dev /dev
for i in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 -o rw /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda"; poweroff -f; }
mount --move /dev /newroot/dev
umount /proc
exec switch_root /newroot /power/init
INIT
chmod 0755 "$out/initrd/init"
mkdir -p "$out/initrd/proc"
(cd "$out/initrd" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$out/initrd.img"
rm -rf "$out/deb"
touch "$out/.complete"
