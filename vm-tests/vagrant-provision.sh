#!/usr/bin/env bash
# Provisioning of one Vagrant lab VM (see the Vagrantfile), run as root in the guest:
#   vagrant-provision.sh etcd|node ADDRESS ETCD-ENDPOINT DATAPLANE build|prebuilt
# Installs and builds twill from the synced checkout (/opt/twill) unless it came prebuilt, starts
# etcd on the first VM, then the agent on the private network's address and one pod.
set -euo pipefail
role=$1 address=$2 endpoint=$3 dataplane=$4 mode=$5
cd /opt/twill

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  apt-get update -qq
  candidate=$(apt-cache policy nodejs | sed -n 's/^ *Candidate: \([0-9]*\).*/\1/p')
  [ "${candidate:-0}" -ge 20 ] || { echo "twill needs Node >= 20; this box's Debian offers nodejs ${candidate:-none} (use debian/trixie64 or newer)" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if [ "$mode" = build ]; then
  scripts/setup.sh
elif [ "$(stat -f -c %T /sys/fs/bpf)" != bpf_fs ]; then
  mount -t bpf bpf /sys/fs/bpf
fi

[ "$role" = etcd ] && vm-tests/node.sh etcd "$address"
vm-tests/node.sh agent "$endpoint" "$dataplane" "$address"
echo "pod1: $(vm-tests/node.sh pod pod1)"
