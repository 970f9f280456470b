#!/bin/bash
# Run by the QEMU tier's guest init (vm-tests/guest/twill-vm-init) as PID 1, from the host's
# checkout. Mounts what the agent needs, brings up eth0 with the address from the kernel command
# line, then serves the host's commands on the virtio-serial port "twill.ctl": one line
# "ID BASE64(bash script)" in, one line "ID EXIT-CODE BASE64(stdout and stderr)" out.
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/netns /dev/pts /dev/shm
mount -t devpts devpts /dev/pts

arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p" | tail -n 1; }
hostname "$(arg twill.hostname)"
# A checkout whose node_modules links outside itself (a git worktree sharing another's) gets that
# directory as a second share, mounted where the link points.
deps=$(arg twill.deps)
if [ -n "$deps" ]; then
  mkdir -p "$deps"
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro twill-deps "$deps"
fi
for m in virtio_net virtio_console; do modprobe "$m"; done
ip link set lo up
ip addr add "$(arg twill.ip)" dev eth0
ip link set eth0 up
sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0

port=
for _ in $(seq 50); do
  for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = twill.ctl ] && port=/dev/${p##*/}
  done
  [ -n "$port" ] && [ -c "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "guest-serve: no twill.ctl port" >/dev/console; exec sleep infinity; }
exec 3<>"$port"
echo "guest-serve: serving commands on $port" >/dev/console
while :; do
  while IFS=' ' read -r id script <&3; do
    out=$(bash -c "$(printf %s "$script" | base64 -d)" 2>&1 </dev/null)
    rc=$?
    printf '%s %s %s\n' "$id" "$rc" "$(printf %s "$out" | base64 -w0)" >&3
  done
  sleep 0.2 # the host closed the port; wait for the next connection
done
