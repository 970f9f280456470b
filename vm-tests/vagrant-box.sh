#!/usr/bin/env bash
# Makes a vagrant-libvirt box from the VM tier's image (vm-tests/image.sh): the same Debian
# rootfs plus a `vagrant` user with Vagrant's insecure key (Vagrant swaps in a fresh key on first
# boot), booted directly from the image's kernel and busybox initrd into systemd. Cached next to
# the image; prints the box file.
#   vagrant-box.sh IMAGE-DIR
set -euo pipefail
image=${1:?usage: vagrant-box.sh IMAGE-DIR}
box=$image/vagrant.box
[ -f "$box" ] && { echo "$box"; exit 0; }
key=$(find /usr/share/rubygems-integration /usr/lib/ruby /usr/share/vagrant -path '*/keys/vagrant.pub' 2>/dev/null | head -n 1 || true)
[ -n "$key" ] || { echo "vagrant-box.sh: Vagrant's insecure public key not found (is vagrant installed? vm-tests/setup.sh --vagrant)" >&2; exit 1; }

work=$image/box.tmp
rm -rf "$work"
mkdir -p "$work"
cp -a "$image/rootfs" "$work/root"
root=$work/root
chroot "$root" useradd --create-home --shell /bin/bash vagrant
install -d -m 0700 "$root/home/vagrant/.ssh"
install -m 0600 "$key" "$root/home/vagrant/.ssh/authorized_keys"
chroot "$root" chown -R vagrant:vagrant /home/vagrant/.ssh
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > "$root/etc/sudoers.d/vagrant"
chmod 0440 "$root/etc/sudoers.d/vagrant"
echo 'UseDNS no' > "$root/etc/ssh/sshd_config.d/vagrant.conf"
# DHCP only for the management NIC: Vagrant writes its own networkd files for the others, and
# ours must not sort before them.
mv "$root/etc/systemd/network/50-eth.network" "$root/etc/systemd/network/99-management.network"
sed -i 's/^Name=eth\*/Name=eth0/' "$root/etc/systemd/network/99-management.network"
size_gb=4
mke2fs -q -t ext4 -L twill-root -d "$root" "$work/root.ext4" "${size_gb}G" >&2
qemu-img convert -O qcow2 "$work/root.ext4" "$work/box.img"
rm -rf "$root" "$work/root.ext4"
cp "$image/vmlinuz" "$image/initrd-fast.img" "$work/"
printf '{"provider":"libvirt","format":"qcow2","virtual_size":%d}\n' "$size_gb" > "$work/metadata.json"
cat > "$work/Vagrantfile" <<'VF'
Vagrant.configure('2') do |config|
  config.vm.provider :libvirt do |lv|
    # A raw ext4 disk without a boot loader: the kernel and initrd come with the box.
    lv.kernel = File.join(__dir__, 'vmlinuz')
    lv.initrd = File.join(__dir__, 'initrd-fast.img')
    lv.cmd_line = 'root=/dev/vda rw console=ttyS0 net.ifnames=0'
    lv.disk_bus = 'virtio'
  end
end
VF
tar -C "$work" -cf "$box.tmp" metadata.json Vagrantfile box.img vmlinuz initrd-fast.img
rm -rf "$work"
mv "$box.tmp" "$box"
echo "$box"
