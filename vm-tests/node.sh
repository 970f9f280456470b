#!/usr/bin/env bash
# One lab node's parts inside a VM, shared by the QEMU tier and the Vagrantfile:
#   node.sh etcd ADDRESS [NETWORK]           etcd on ADDRESS:2379 and flannel's network config
#   node.sh agent ENDPOINT DATAPLANE IFACE   twill agent (bpf, or kernel: flannel's vxlan setup)
#   node.sh pod NAME                         a pod (netns NAME) made through twill's CNI plugin; prints its address
# Daemons run as transient systemd units where systemd runs (Vagrant), else in the background
# with their logs in /run/twill-vm (the QEMU tier's guests have no systemd).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=/coreos.com/network
subnet_file=/run/flannel/subnet.env
logs=/run/twill-vm
mkdir -p "$logs"

die() { echo "node.sh: $*" >&2; exit 1; }

daemon() {
  local name=$1; shift
  if [ -d /run/systemd/system ]; then
    systemctl reset-failed "twill-$name" 2>/dev/null || true
    systemd-run --quiet --unit="twill-$name" --property=KillMode=mixed "$@"
  else
    setsid "$@" >"$logs/$name.log" 2>&1 </dev/null &
  fi
}

log_of() { if [ -d /run/systemd/system ]; then journalctl -q -u "twill-$1" | tail -n 20; else tail -n 20 "$logs/$1.log"; fi; }

# Readiness waits are bounded by a count of 1 s tries: guests under QEMU TCG are slow but not stuck.
wait_until() {
  local what=$1 tries=$2; shift 2
  for ((i = 0; i < tries; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  # Not die: the caller shows the daemon's log first.
  echo "node.sh: $what: not ready after $tries tries" >&2
  return 1
}

case "${1:-}" in
  etcd)
    address=${2:?address}; network=${3:-10.244.0.0/16}
    daemon etcd etcd --name "$(hostname)" --data-dir /var/lib/twill-vm/etcd \
      --listen-client-urls "http://$address:2379,http://127.0.0.1:2379" --advertise-client-urls "http://$address:2379" \
      --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
      --initial-cluster "$(hostname)=http://127.0.0.1:2380"
    export ETCDCTL_API=3
    wait_until "etcd on $address" 300 etcdctl --endpoints "http://$address:2379" endpoint health || { log_of etcd; exit 1; }
    if [ -z "$(etcdctl --endpoints "http://$address:2379" get --print-value-only "$prefix/config")" ]; then
      etcdctl --endpoints "http://$address:2379" put "$prefix/config" \
        "{\"Network\":\"$network\",\"SubnetLen\":24,\"Backend\":{\"Type\":\"vxlan\"}}" >/dev/null
    fi
    echo "etcd http://$address:2379, network $network"
    ;;
  agent)
    endpoint=${2:?etcd endpoint}; dataplane=${3:?dataplane}; iface=${4:?interface}
    rm -f "$subnet_file"
    daemon agent "$repo/bin/twill" agent --dataplane="$dataplane" --etcd-endpoints="$endpoint" \
      --etcd-prefix="$prefix" --iface="$iface" --subnet-file="$subnet_file" -v=1
    wait_until "twill agent" 300 test -s "$subnet_file" || { log_of agent; exit 1; }
    grep FLANNEL_SUBNET "$subnet_file"
    ;;
  pod)
    name=${2:?pod name}
    "$repo/bin/twill" cni install --dir /opt/cni/bin --name flannel >/dev/null
    ip netns add "$name" 2>/dev/null || die "pod $name exists"
    conf='{"cniVersion":"0.4.0","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true,"ipMasq":false}}'
    CNI_COMMAND=ADD CNI_CONTAINERID="$(hostname)-$name" CNI_NETNS="/run/netns/$name" CNI_IFNAME=eth0 \
      CNI_PATH=/opt/cni/bin:/usr/lib/cni /opt/cni/bin/flannel <<<"$conf" >"$logs/cni-$name.json" || { cat "$logs/cni-$name.json"; exit 1; }
    ip -n "$name" -4 -o addr show dev eth0 | awk '{split($4, a, "/"); print a[1]}'
    ;;
  *) die "usage: node.sh etcd ADDRESS [NETWORK] | agent ENDPOINT DATAPLANE IFACE | pod NAME" ;;
esac
