#!/usr/bin/env bash
# Installs everything twill needs on Debian 12 and builds it. Safe to run again: it installs
# only missing packages, fetches the pinned Node.js only when it is not installed and checked,
# reinstalls npm modules only when the lockfile changed, and the BPF and TypeScript builds are
# incremental. twill runs on the Node.js it installs in .runtime/node (scripts/runtime/), not on
# the machine's `node`: that one (or any npm) only serves to fetch it.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "twill setup must run as root (BPF, namespaces, apt)" >&2; exit 1; }

packages=(clang llvm bpftool libbpf-dev libbpf1 linux-libc-dev make etcd-server etcd-client iproute2 iperf3 qperf
          tcpdump iputils-ping python3-scapy containernetworking-plugins iptables nftables procps curl openssl ethtool python3-yaml linux-perf
          mmdebstrap podman runc)
# mmdebstrap, podman and runc: scripts/image/build.sh builds the container image with no registry
# (its base from Debian packages), and test/integration/kube-image.test.ts runs its agent. runc
# beside podman's crun, which refuses hosts with cgroup v1 and v2 mixed.
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages present"
fi
# Debian's etcd-server package starts a system etcd on 2379 where an init system runs; twill's
# lab and tests start their own etcd on their own ports and never use it.

if [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" != bpf_fs ]; then
  say "mounting bpffs on /sys/fs/bpf"
  mkdir -p /sys/fs/bpf
  mount -t bpf bpf /sys/fs/bpf
fi

# npm only downloads the pinned runtime; with none on the machine, Debian's (and its nodejs,
# which twill never runs on) does that.
if ! command -v npm >/dev/null; then
  say "installing Debian's npm to fetch the pinned Node.js"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
scripts/runtime/install.sh
# From here on, `node` (npm's own, the build's, the tests') is the pinned runtime.
export PATH="$PWD/.runtime/node/bin:$PATH"

lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat node_modules/.twill-lock-hash 2>/dev/null)" != "$lock_hash" ]; then
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_hash" > node_modules/.twill-lock-hash
else
  say "node modules match package-lock.json"
fi

say "building BPF objects and TypeScript"
npm run --silent build
# flanneld and flannel's CNI plugin, which the lab's --flanneld-nodes and the tests run beside
# twill, and Kubernetes' API server, controller manager and kubectl for flannel's Kubernetes
# mode: built once per pinned version (scripts/peers/versions.env) and cached. Kubernetes' first
# build is the long one: 11 to 15 minutes on two busy cores, 2.6 GB of memory at its peak, about
# 0.6 GB of modules and 4 GB of Go build cache.
scripts/peers/build.sh
say "ready"
