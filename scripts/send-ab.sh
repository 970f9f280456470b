#!/usr/bin/env bash
# What one piece of the datapath is worth, measured in one run on one lab: a pod on n1 sends
# 64-byte UDP to a pod on n2 (iperf3, client on CPU 0, server on CPU 1, as `twill bench` pins
# them), with the piece present and absent in turn (ABBA per repetition, so a drift of the machine
# falls on both), and one perf profile of each state, where the kernel functions (or the program)
# the piece concerns are looked for. The agent of the node whose piece is switched (n1 for the
# send side, n2 for the receive side) is stopped first, so it does not put back what the script
# takes away; its datapath stays as it is.
#   scripts/send-ab.sh headroom|next-hop|next-hop6|pod-source-check|peer-source-check [REPS] [SECONDS]
#   (default 4 repetitions of 3 s)
# headroom: the pod bridge's headroom port (controller/dataplane/headroom.ts), whose absence
#   costs a head reallocation (pskb_expand_head) per packet.
# next-hop: n2's entry in n1's twill_next_hops (controller/dataplane/next-hops.ts), whose absence
#   sends through bpf_redirect_neigh (a route and neighbour lookup per packet in skb_do_redirect).
# next-hop6: the same for IPv6: n2's entry in n1's twill_next_hops6, on a dual-stack lab whose pods
#   send to each other's IPv6 addresses (IPv6 VXLAN over the IPv6 underlay).
# pod-source-check: the check of each packet's source against the pod's endpoints (bit 0x2 of n1's
#   twill_config, --pod-source-check drop), whose presence costs a map lookup per packet in
#   twill_from_pod.
# peer-source-check: n2's decap checking the inner source against the sending peer's subnet, its
#   programs swapped between this build's and one built with TWILL_BENCH_NO_PEER_SOURCE_CHECK
#   (`twill dataplane attach` on n2's pins, which replaces the programs on their links).
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${1:?usage: scripts/send-ab.sh headroom|next-hop|next-hop6|pod-source-check|peer-source-check [REPS] [SECONDS]}
reps=${2:-4}
secs=${3:-3}
case "$variant" in
headroom) lab=bhr underlay=192.168.158.0/24 symbols="pskb_expand_head" ;;
next-hop) lab=bnh underlay=192.168.163.0/24 symbols="skb_do_redirect fib_table_lookup" ;;
next-hop6) lab=bn6 underlay=192.168.168.0/24 symbols="skb_do_redirect fib6_table_lookup" ;;
pod-source-check) lab=bps underlay=192.168.165.0/24 symbols="bpf_prog_[0-9a-f]+_twill_from_pod" ;;
peer-source-check) lab=bpp underlay=192.168.166.0/24 symbols="bpf_prog_[0-9a-f]+_twill_decap_tc" ;;
*) echo "send-ab: unknown variant $variant (headroom, next-hop, next-hop6, pod-source-check or peer-source-check)" >&2 && exit 2 ;;
esac
say() { echo "[send-ab $variant] $*" >&2; }
scripts/setup.sh >/dev/null
export PATH="$PWD/.runtime/node/bin:$PATH"
bin/twill lab down --name "$lab" >/dev/null 2>&1 || true
trap 'bin/twill lab down --name "$lab" >/dev/null 2>&1 || true' EXIT
say "lab $lab up (2 nodes, one pod each)"
family=()
[ "$variant" = next-hop6 ] && family=(--ip-family dual)
bin/twill lab up --name "$lab" --nodes 2 --pods-per-node 1 --underlay "$underlay" "${family[@]}" >/dev/null
status=$(bin/twill lab status --name "$lab" --json)
field() { jq -r "$1" <<<"$status"; }
n1=$(field '.nodes[] | select(.name=="n1") | .netns')
n2=$(field '.nodes[] | select(.name=="n2") | .netns')
pin1=$(field '.nodes[] | select(.name=="n1") | .pinDir')
stopped=n1
[ "$variant" = peer-source-check ] && stopped=n2
pid=$(field ".nodes[] | select(.name==\"$stopped\") | .agent.pid")
n2ip=$(field '.nodes[] | select(.name=="n2") | .underlayIp')
client=$(field '.pods[] | select(.node=="n1") | .netns')
server=$(field '.pods[] | select(.node=="n2") | .netns')
target=$(field '.pods[] | select(.node=="n2") | .ip')
[ "$variant" = next-hop6 ] && target=$(field '.pods[] | select(.node=="n2") | .ips[] | select(contains(":"))')
kill -TERM "$pid"
while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
in_n1() { nsenter --net="/run/netns/$n1" -- "$@"; }
case "$variant" in
headroom)
  in_n1 ip link show twill-hr >/dev/null || { say "n1 has no headroom port: nothing to compare"; exit 1; }
  # The same device the agent makes (dataplane/headroom.ts), made and removed by hand here.
  piece() {
    if [ "$1" = with ]; then
      in_n1 ip link show twill-hr >/dev/null 2>&1 || {
        in_n1 ip link add twill-hr mtu 65535 type vxlan id 16777215 dstport 1
        in_n1 ip link set twill-hr master cni0
      }
    else
      in_n1 ip link del twill-hr 2>/dev/null || true
    fi
  }
  ;;
next-hop | next-hop6)
  # The MAC the agent would copy from n1's neighbour table, written and removed by hand here.
  mac=$(nsenter --net="/run/netns/$n2" -- ip -j route get "$(field '.nodes[] | select(.name=="n1") | .underlayIp')" | jq -r '.[0].dev')
  mac=$(nsenter --net="/run/netns/$n2" -- ip -j link show "$mac" | jq -r '.[0].address')
  map=twill_next_hops peer=$n2ip
  [ "$variant" = next-hop6 ] && map=twill_next_hops6 peer=$(field '.nodes[] | select(.name=="n2") | .underlayIp6')
  key=$(python3 -c "import ipaddress, sys; print(*ipaddress.ip_address(sys.argv[1]).packed)" "$peer")
  value="$(sed 's/:/ /g; s/\([0-9a-f][0-9a-f]\)/0x\1/g' <<<"$mac") 0 0"
  piece() {
    if [ "$1" = with ]; then
      bpftool map update pinned "$pin1/$map" key $key value $value
    else
      bpftool map delete pinned "$pin1/$map" key $key 2>/dev/null || true
    fi
  }
  ;;
pod-source-check)
  # The bit the agent sets from --pod-source-check, flipped by hand in n1's pinned twill_config.
  piece() {
    node --input-type=module -e "
      import { DatapathMaps } from './dist/controller/dataplane/datapath-maps.js';
      const maps = DatapathMaps.open('$pin1');
      const c = maps.readConfig();
      maps.writeConfig({ ...c, flags: '$1' === 'with' ? c.flags | 2 : c.flags & ~2 });
      maps.close();"
  }
  ;;
peer-source-check)
  alt=$(mktemp -d)
  trap 'rm -rf "$alt"; bin/twill lab down --name "$lab" >/dev/null 2>&1 || true' EXIT
  cp bpf/build/*.o "$alt/"
  for noct in "" -noct; do
    clang -O2 -g -Wall -Werror -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -Ibpf/include -DTWILL_BENCH_NO_PEER_SOURCE_CHECK \
      ${noct:+-DTWILL_NO_CONNTRACK} -c bpf/decap.bpf.c -o "$alt/decap$noct.bpf.o"
  done
  node2() { field ".nodes[] | select(.name==\"n2\") | $1"; }
  attach_args=(--pin-dir "$(node2 .pinDir)" --iface eth0 --public-ip "$n2ip" --vtep-mac "$(node2 .vtepMac)" --subnet "$(node2 .subnet)" --network "$(field .network)")
  piece() {
    local dir=$PWD/bpf/build
    [ "$1" = with ] || dir=$alt
    TWILL_BPF_DIR=$dir nsenter --net="/run/netns/$n2" -- bin/twill dataplane attach "${attach_args[@]}" >/dev/null
  }
  ;;
esac
# Datagrams per second the server received.
measure() {
  nsenter --net="/run/netns/$server" -- taskset -c 1 iperf3 -s -1 -p 5411 >/dev/null 2>&1 &
  local srv=$!
  sleep 0.3
  nsenter --net="/run/netns/$client" -- taskset -c 0 iperf3 -c "$target" -p 5411 -u -b 0 -l 64 -t "$secs" -J |
    jq '.end.sum.packets - .end.sum.lost_packets | . / '"$secs"' | floor'
  wait "$srv" || true
}
declare -A total=([with]=0 [without]=0)
printf '| repetition | with the %s (pps) | without (pps) | with / without |\n|--:|--:|--:|--:|\n' "$variant"
for r in $(seq 1 "$reps"); do
  declare -A pps=([with]=0 [without]=0)
  order="with without without with"
  [ $((r % 2)) = 0 ] && order="without with with without"
  for state in $order; do
    piece "$state"
    pps[$state]=$((pps[$state] + $(measure)))
  done
  total[with]=$((total[with] + pps[with]))
  total[without]=$((total[without] + pps[without]))
  printf '| %d | %d | %d | %sx |\n' "$r" $((pps[with] / 2)) $((pps[without] / 2)) "$(python3 -c "print(f'{${pps[with]}/${pps[without]}:.3f}')")"
  say "repetition $r of $reps done"
done
printf '| all | %d | %d | %sx |\n' $((total[with] / reps / 2)) $((total[without] / reps / 2)) "$(python3 -c "print(f'{${total[with]}/${total[without]}:.3f}')")"
# One profile per state, the whole machine, during the same traffic.
for state in without with; do
  piece "$state"
  nsenter --net="/run/netns/$server" -- taskset -c 1 iperf3 -s -1 -p 5412 >/dev/null 2>&1 &
  sleep 0.3
  nsenter --net="/run/netns/$client" -- taskset -c 0 iperf3 -c "$target" -p 5412 -u -b 0 -l 64 -t "$secs" >/dev/null &
  sleep 1
  perf record -q -a -g -o "/tmp/send-ab-$state.data" -- sleep 1 >/dev/null 2>&1
  wait || true
  for sym in $symbols; do
    share=$(perf report -i "/tmp/send-ab-$state.data" --children --sort sym --stdio 2>/dev/null | awk -v s="$sym" '$0 ~ "\\[k\\] " s "$" && !seen {print $1; seen=1}')
    echo "profile, ${state} the ${variant}: ${sym} ${share:-absent} (with its callees, share of all samples)"
  done
  rm -f "/tmp/send-ab-$state.data"
done
echo "commit $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg)"
