#!/usr/bin/env bash
# Builds the guest image of the VM tier from Debian packages (mmdebstrap: bookworm, with two
# kernels: 6.12 from bookworm-backports and bookworm's stock 6.1, so one image proves both), or
# reuses it: images are cached under
# $TWILL_VM_CACHE (default /var/cache/twill-vm) keyed by a hash of everything that goes in
# (this script, the guest init, the pinned node binary). Prints the image directory, which holds
#   rootfs/        the unpacked root file system (vagrant-box.sh builds the box from it)
#   rootfs.ext4    the same as a raw ext4 disk (guests use it with snapshot=on, never writing it)
#   vmlinuz, initrd.img (Debian's), initrd-fast.img (busybox: virtio + ext4 only, boots fast):
#                  the newest kernel (6.12), the one vagrant-box.sh and a guest without a choice boot
#   kernels/KVER/{vmlinuz,initrd-fast.img}   every installed kernel, 6.12 and 6.1 alike
#   kernel-versions  their versions, one a line (kernel-version: the newest alone)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${TWILL_VM_CACHE:-/var/cache/twill-vm}
suite=bookworm
mirror=http://deb.debian.org/debian
node_bin=$(readlink -f "$here/../.runtime/node/bin/node")
[ -x "$node_bin" ] || { echo "vm-tests/image.sh: no pinned Node.js in .runtime/node (run scripts/setup.sh)" >&2; exit 1; }
# The guest runs the host's checkout (dist/, bpf/build/*.o, node_modules over 9p); bin/twill
# there runs on the checkout's pinned Node (.runtime/node, Node 24), which is also the guest's
# /usr/bin/node (bookworm's nodejs is 18). Nothing is compiled in the guest.
packages=(systemd-sysv udev kmod iproute2 iputils-ping bpftool libbpf1 libstdc++6 etcd-server etcd-client
          containernetworking-plugins iptables nftables procps tcpdump openssh-server sudo rsync
          ca-certificates netbase busybox-static)

say() { printf '[vm-image] %s\n' "$*" >&2; }

key=$( { cat "$0" "$here"/guest/*; echo "${packages[*]}"; sha256sum "$node_bin"; } | sha256sum | cut -c1-16)
out=$cache/image-$key
if [ -f "$out/.complete" ]; then
  say "cached image $out"
  echo "$out"
  exit 0
fi

for tool in mmdebstrap mke2fs cpio; do
  command -v "$tool" >/dev/null || { echo "vm-tests/image.sh: $tool missing (run vm-tests/setup.sh)" >&2; exit 1; }
done
[ -x /bin/busybox ] || { echo "vm-tests/image.sh: /bin/busybox missing (run vm-tests/setup.sh)" >&2; exit 1; }

mkdir -p "$cache"
rm -rf "$out" "$out.tmp"
mkdir -p "$out.tmp"
work=$out.tmp
say "building $out from Debian packages (cold cache: a few minutes)"
start=$SECONDS
mmdebstrap --quiet --variant=minbase --include="$(IFS=,; echo "${packages[*]}"),linux-image-amd64/$suite-backports" \
  --customize-hook="cp '$node_bin' \"\$1/usr/bin/node\"" \
  --customize-hook="install -m 0755 '$here/guest/twill-vm-init' \"\$1/usr/local/sbin/twill-vm-init\"" \
  --customize-hook='chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --allow-downgrades linux-image-amd64/bookworm >&2' \
  --customize-hook='echo "/dev/vda / ext4 defaults 0 1" > "$1/etc/fstab"' \
  --customize-hook='printf "[Match]\nName=eth*\n\n[Network]\nDHCP=yes\n" > "$1/etc/systemd/network/50-eth.network"' \
  --customize-hook='chroot "$1" systemctl enable systemd-networkd >/dev/null 2>&1' \
  --customize-hook='chroot "$1" systemctl mask etcd.service >/dev/null 2>&1' \
  --customize-hook='echo "root:twill" | chroot "$1" chpasswd' \
  "$suite" "$work/rootfs" "deb $mirror $suite main" "deb $mirror $suite-backports main"
say "debootstrapped in $((SECONDS - start)) s"

# bookworm's linux-image-amd64 (a downgrade of the backports metapackage) pulled in the stock 6.1
# image beside 6.12: both kernels, their modules in the one rootfs, each guest boots either by path.
kvers=$(ls "$work/rootfs/lib/modules" | sort -V)
[ "$(echo "$kvers" | wc -l)" -ge 2 ] || { echo "vm-tests/image.sh: expected two kernels in the image, found: $kvers" >&2; exit 1; }
kver=$(echo "$kvers" | tail -n 1)

# The fast initrd of one kernel: busybox, the modules for a virtio disk with ext4 (in load order), an init.
fast_initrd() {
  local kv=$1 dest=$2 fast=$work/initrd-fast
  rm -rf "$fast"
  mkdir -p "$fast/bin" "$fast/modules"
  cp /bin/busybox "$fast/bin/busybox"
  ln -s busybox "$fast/bin/sh"
  install -m 0755 "$here/guest/initrd-init" "$fast/init"
  for m in virtio_pci virtio_blk ext4; do chroot "$work/rootfs" modprobe -S "$kv" --show-depends "$m"; done | awk '$1 == "insmod" {print $2}' | awk '!seen[$0]++' |
    while read -r ko; do
      name=$(basename "$ko"); name=${name%.xz}; name=${name%.zst}
      case "$ko" in
        *.xz) xz -dc "$work/rootfs$ko" > "$fast/modules/$name" ;;
        *.zst) zstd -qdc "$work/rootfs$ko" > "$fast/modules/$name" ;;
        *) cp "$work/rootfs$ko" "$fast/modules/$name" ;;
      esac
      echo "$name" >> "$fast/modules.order"
    done
  (cd "$fast" && find . | cpio -o -H newc --quiet | gzip -1) > "$dest"
  rm -rf "$fast"
}
for kv in $kvers; do
  mkdir -p "$work/kernels/$kv"
  cp "$work/rootfs/boot/vmlinuz-$kv" "$work/kernels/$kv/vmlinuz"
  fast_initrd "$kv" "$work/kernels/$kv/initrd-fast.img"
done
cp "$work/kernels/$kver/vmlinuz" "$work/kernels/$kver/initrd-fast.img" "$work/"
cp "$work/rootfs/boot/initrd.img-$kver" "$work/initrd.img"

mke2fs -q -t ext4 -L twill-root -d "$work/rootfs" "$work/rootfs.ext4" 3G >&2
echo "$kver" > "$work/kernel-version"
echo "$kvers" > "$work/kernel-versions"
touch "$work/.complete"
# Only the newest image is kept: older keys are dead once an input changed.
find "$cache" -maxdepth 1 -name 'image-*' ! -name "image-$key" ! -name "image-$key.tmp" -exec rm -rf {} +
mv "$work" "$out"
say "image $out ready in $((SECONDS - start)) s (kernels $(echo $kvers))"
echo "$out"
