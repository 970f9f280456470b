#!/usr/bin/env bash
# The Vagrant smoke run, offline: the repo's Vagrantfile with vagrant-libvirt (Debian packages),
# libvirtd and virtlogd started here inside a network namespace (no systemd, no KVM: libvirt's
# "qemu" driver, TCG), and the box vm-tests builds from its own Debian image. Brings the lab up
# (tvm-1 etcd; BPF agents; the last VM as flannel's kernel VXLAN), pings every pod pair across VMs,
# then destroys everything. Ends with "N passed, N failed" (one per ordered pod pair).
#   vm-tests/vagrant-smoke.sh [VM-COUNT]     default 3
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-3}
netns=tvm-virt
state=/run/twill-vagrant-smoke
say() { printf '[vagrant-smoke] %s\n' "$*"; }

tallied=0
trap '[ "$tallied" = 1 ] || echo "0 passed, 1 failed"' EXIT
vm-tests/setup.sh --vagrant
image=$(vm-tests/image.sh)
box_file=$(vm-tests/vagrant-box.sh "$image")
box=twill-local-${image##*/image-}

if [ -S /run/libvirt/libvirt-sock ] && virsh -c qemu:///system version >/dev/null 2>&1; then
  echo "vagrant-smoke: a libvirtd is already running; this run starts and stops its own" >&2
  exit 1
fi

# libvirt as root without systemd, cgroups or a security driver (settings kept in one marked block).
conf=/etc/libvirt/qemu.conf
if ! grep -q '^# twill vm-tests' "$conf"; then
  printf '%s\n' '# twill vm-tests' 'user = "root"' 'group = "root"' 'security_driver = "none"' 'cgroup_controllers = [ ]' >> "$conf"
fi

export VAGRANT_HOME=/var/cache/twill-vm/vagrant.d VAGRANT_DOTFILE_PATH=$state/vagrant VAGRANT_DEFAULT_PROVIDER=libvirt
# Offline: no version or box update checks.
export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_BOX_UPDATE_CHECK_DISABLE=1
export TWILL_BOX=$box TWILL_VMS=$count TWILL_VM_PREBUILT=1 TWILL_VM_TCG=1 TWILL_DATAPLANE=bpf TWILL_LAST_DATAPLANE=kernel
in_ns() { nsenter --net=/run/netns/$netns -- "$@"; }

cleanup() {
  set +e
  if [ -d "$VAGRANT_DOTFILE_PATH" ]; then say "destroying the lab"; in_ns vagrant destroy -f >/dev/null; fi
  for pidfile in /run/libvirtd.pid /run/virtlogd.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
  done
  sleep 1
  ip netns del $netns 2>/dev/null
  rm -rf "$state"
}
# A run that stops before its pings still reports: one failed test.
on_exit() { cleanup; [ "$tallied" = 1 ] || echo "0 passed, 1 failed"; }
cleanup
trap on_exit EXIT
mkdir -p "$state"
ip netns add $netns
ip -n $netns link set lo up
in_ns virtlogd --daemon
in_ns libvirtd --daemon
for _ in $(seq 30); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 1; done

# Only the newest local box is kept.
for old in $(vagrant box list 2>/dev/null | awk '$1 ~ /^twill-local-/ {print $1}'); do
  [ "$old" = "$box" ] && continue
  vagrant box remove --force "$old" >/dev/null
  # vagrant-libvirt's copy of the old box in libvirt's pool
  for vol in $(virsh -c qemu:///system vol-list default 2>/dev/null | awk -v b="${old}_vagrant_box_image_" 'index($1, b) == 1 {print $1}'); do
    virsh -c qemu:///system vol-delete --pool default "$vol" >/dev/null
  done
done
vagrant box list 2>/dev/null | grep -q "^$box " || { say "adding box $box"; vagrant box add --name "$box" "$box_file" >/dev/null; }

start=$SECONDS
say "vagrant up: $count VMs (TCG)"
# Without the box upload's progress meter, which redraws one line thousands of times.
in_ns vagrant up --no-parallel --provider libvirt | sed -u 's/\x1b\[K//g; s/\r/\n/g' | grep --line-buffered -v '^Progress: '
say "lab up in $((SECONDS - start)) s"

in_ns vagrant ssh-config > "$state/ssh-config"
on() { local vm=$1; shift; in_ns ssh -F "$state/ssh-config" -o LogLevel=ERROR "$vm" sudo "$@"; }
declare -A pod
for i in $(seq "$count"); do
  pod[$i]=$(on "tvm-$i" ip -n pod1 -4 -o addr show dev eth0 | awk '{split($4, a, "/"); print a[1]}')
  say "tvm-$i: pod1 ${pod[$i]}"
done
passed=0 failed=0
for a in $(seq "$count"); do
  for b in $(seq "$count"); do
    [ "$a" = "$b" ] && continue
    if on "tvm-$a" ip netns exec pod1 ping -c 3 -W 5 "${pod[$b]}" >/dev/null; then
      passed=$((passed + 1)); say "ok   tvm-$a pod -> tvm-$b pod (${pod[$b]})"
    else
      failed=$((failed + 1)); say "FAIL tvm-$a pod -> tvm-$b pod (${pod[$b]})"
    fi
  done
done
say "total $((SECONDS - start)) s"
echo "$passed passed, $failed failed"
tallied=1
[ "$failed" = 0 ]
