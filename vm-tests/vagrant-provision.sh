#!/usr/bin/env bash
# Provisioning of one Vagrant lab VM (see the Vagrantfile), run as root in the guest:
#   vagrant-provision.sh etcd|node ADDRESS ETCD-ENDPOINT DATAPLANE build|prebuilt
# Installs and builds twill from the synced checkout (/opt/twill) unless it came prebuilt, starts
# etcd on the first VM, then the agent on the private network's address and one pod.
set -euo pipefail
role=$1 address=$2 endpoint=$3 dataplane=$4 mode=$5
cd /opt/twill

# twill runs on the Node.js that scripts/setup.sh pins and installs into .runtime/ (a prebuilt
# checkout brings it along); building needs npm only to fetch it, from any Node Debian has.
if [ "$mode" = build ] && ! command -v npm >/dev/null; then
  apt-get update -qq
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
