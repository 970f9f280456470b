#!/usr/bin/env bash
# Installs what the VM tier needs on Debian 12 on top of scripts/setup.sh: QEMU (TCG), the image
# builder (mmdebstrap) and the pieces of the fast initrd. With --vagrant also vagrant,
# vagrant-libvirt and libvirt for the Vagrant smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "vm-tests setup must run as root (apt, namespaces, tap devices)" >&2; exit 1; }
packages=(qemu-system-x86 qemu-utils mmdebstrap busybox-static e2fsprogs cpio xz-utils zstd tcpdump)
[ "${1:-}" = --vagrant ] && packages+=(vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients dnsmasq-base ebtables)
# apt-get does nothing for packages already installed; it needs the package lists only otherwise.
install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; }
install 2>/dev/null || { echo "[vm-setup] installing Debian packages: ${packages[*]}"; apt-get update -qq && install; }
