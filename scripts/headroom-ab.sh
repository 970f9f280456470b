#!/usr/bin/env bash
# What the pod bridge's headroom port (controller/dataplane/headroom.ts) is worth, measured in one
# run on one lab: a pod on n1 sends 64-byte UDP to a pod on n2 (iperf3, client on CPU 0, server
# on CPU 1, as `twill bench` pins them), with n1's headroom port present and absent in turn
# (ABBA per repetition, so a drift of the machine falls on both), and one perf profile of each
# state, where pskb_expand_head (the head reallocation the port is there to avoid) is looked for.
# n1's agent is stopped first, so it does not put the port back; its datapath stays as it is.
#   scripts/headroom-ab.sh [REPS] [SECONDS]      (default 4 repetitions of 3 s)
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-4}
secs=${2:-3}
lab=bhr
say() { echo "[headroom-ab] $*" >&2; }
scripts/setup.sh >/dev/null
export PATH="$PWD/.runtime/node/bin:$PATH"
bin/twill lab down --name "$lab" >/dev/null 2>&1 || true
trap 'bin/twill lab down --name "$lab" >/dev/null 2>&1 || true' EXIT
say "lab $lab up (2 nodes, one pod each)"
bin/twill lab up --name "$lab" --nodes 2 --pods-per-node 1 --underlay 192.168.158.0/24 >/dev/null
status=$(bin/twill lab status --name "$lab" --json)
n1=$(jq -r '.nodes[] | select(.name=="n1") | .netns' <<<"$status")
pid=$(jq -r '.nodes[] | select(.name=="n1") | .agent.pid' <<<"$status")
client=$(jq -r '.pods[] | select(.node=="n1") | .netns' <<<"$status")
server=$(jq -r '.pods[] | select(.node=="n2") | .netns' <<<"$status")
target=$(jq -r '.pods[] | select(.node=="n2") | .ip' <<<"$status")
kill -TERM "$pid"
while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
in_n1() { nsenter --net="/run/netns/$n1" -- "$@"; }
in_n1 ip link show twill-hr >/dev/null || { say "n1 has no headroom port: nothing to compare"; exit 1; }
# The same device the agent makes (dataplane/headroom.ts), made and removed by hand here.
port() {
  if [ "$1" = on ]; then
    in_n1 ip link show twill-hr >/dev/null 2>&1 || {
      in_n1 ip link add twill-hr mtu 65535 type vxlan id 16777215 dstport 1
      in_n1 ip link set twill-hr master cni0
    }
  else
    in_n1 ip link del twill-hr 2>/dev/null || true
  fi
}
# Datagrams per second the server received.
measure() {
  nsenter --net="/run/netns/$server" -- taskset -c 1 iperf3 -s -1 -p 5411 >/dev/null 2>&1 &
  local srv=$!
  sleep 0.3
  nsenter --net="/run/netns/$client" -- taskset -c 0 iperf3 -c "$target" -p 5411 -u -b 0 -l 64 -t "$secs" -J |
    jq '.end.sum.packets - .end.sum.lost_packets | . / '"$secs"' | floor'
  wait "$srv" || true
}
declare -A total=([on]=0 [off]=0)
printf '| repetition | with the port (pps) | without (pps) | with / without |\n|--:|--:|--:|--:|\n'
for r in $(seq 1 "$reps"); do
  declare -A pps=([on]=0 [off]=0)
  order="on off off on"
  [ $((r % 2)) = 0 ] && order="off on on off"
  for state in $order; do
    port "$state"
    pps[$state]=$((pps[$state] + $(measure)))
  done
  total[on]=$((total[on] + pps[on]))
  total[off]=$((total[off] + pps[off]))
  printf '| %d | %d | %d | %sx |\n' "$r" $((pps[on] / 2)) $((pps[off] / 2)) "$(python3 -c "print(f'{${pps[on]}/${pps[off]}:.3f}')")"
  say "repetition $r of $reps done"
done
printf '| all | %d | %d | %sx |\n' $((total[on] / reps / 2)) $((total[off] / reps / 2)) "$(python3 -c "print(f'{${total[on]}/${total[off]}:.3f}')")"
# One profile per state, the whole machine, during the same traffic.
for state in off on; do
  port "$state"
  nsenter --net="/run/netns/$server" -- taskset -c 1 iperf3 -s -1 -p 5412 >/dev/null 2>&1 &
  sleep 0.3
  nsenter --net="/run/netns/$client" -- taskset -c 0 iperf3 -c "$target" -p 5412 -u -b 0 -l 64 -t "$secs" >/dev/null &
  sleep 1
  perf record -q -a -g -o "/tmp/headroom-$state.data" -- sleep 1 >/dev/null 2>&1
  wait || true
  share=$(perf report -i "/tmp/headroom-$state.data" --children --sort sym --stdio 2>/dev/null | awk '/\[k\] pskb_expand_head$/ && !seen {print $1; seen=1}')
  echo "profile, port ${state}: pskb_expand_head ${share:-absent} (with its callees, share of all samples)"
  rm -f "/tmp/headroom-$state.data"
done
echo "commit $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg)"
