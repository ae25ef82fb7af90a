#!/usr/bin/env bash
# The cost of clustering, in one run: a node on the embedded store against the same node
# on a 3-member etcd running on this machine (loopback), measured by the shared harness
# (../shared/bench):
#   - instructions, syscalls and context switches per call (stateful-proxy case) and per
#     registration (registrar case: digest, 10,000 users), cost_per_call.sh;
#   - calls per second and registrations per second with CPU per call / registration at
#     each step, run_matrix.sh (one repeat of each, alternating, unless REPEATS says more).
# Every node lifetime starts with no binding in etcd (node.sh clears them), as the
# embedded node starts with an empty state directory.
#
# usage: cluster/bench/cost.sh [--no-cost] [--no-ramp]    (RESULTS_DIR: where results go)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bench=${LIMES_BENCH_DIR:-$root/../shared/bench}
out=${RESULTS_DIR:-/tmp/limes-cluster-cost}/$(date +%Y%m%d-%H%M%S)
do_cost=1 do_ramp=1
for a in "$@"; do
  case $a in
    --no-cost) do_cost=0 ;;
    --no-ramp) do_ramp=0 ;;
    *) echo "usage: $0 [--no-cost] [--no-ramp]" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
(cd "$root" && cargo build --release -q -p limes-node)

# Three etcd members on loopback (client ports 23790-23792, peers 23793-23795).
etcd_dir=$out/etcd
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop EXIT
cluster=m0=http://127.0.0.1:23793,m1=http://127.0.0.1:23794,m2=http://127.0.0.1:23795
for i in 0 1 2; do
  mkdir -p "$etcd_dir/m$i"
  etcd --name "m$i" --data-dir "$etcd_dir/m$i" \
    --listen-client-urls "http://127.0.0.1:$((23790 + i))" \
    --advertise-client-urls "http://127.0.0.1:$((23790 + i))" \
    --listen-peer-urls "http://127.0.0.1:$((23793 + i))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((23793 + i))" \
    --initial-cluster "$cluster" --initial-cluster-state new \
    --initial-cluster-token limes-bench >"$etcd_dir/m$i.log" 2>&1 &
  pids+=($!)
done
etcd_urls=http://127.0.0.1:23790,http://127.0.0.1:23791,http://127.0.0.1:23792
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:23790/health | grep -q true && break
  sleep 0.1
done

limes=$root/target/release/limes
calls="$limes run --config $root/loadtest/cases/stateful-proxy/limes.toml --listen udp:127.0.0.1:{PROXY_PORT} --next-hop sip:127.0.0.1:{UAS_PORT} --admin 127.0.0.1:18080 --state-dir $out/state-calls"
registrar="$root/loadtest/cases/registrar/limes-registrar.sh {PROXY_PORT} 10000"
clustered="$here/node.sh $etcd_urls"

if (( do_cost )); then
  export RESULTS_DIR=$out
  for label in embedded etcd; do
    wrap=""; [ $label = etcd ] && wrap=$clustered
    rm -rf "$out/state-calls"
    "$bench/cost_per_call.sh" --label "calls-$label" --out "$out/cost.csv" \
      --proxy-cmd "$wrap $calls" ext
    "$bench/cost_per_call.sh" --label "reg-$label" --out "$out/cost.csv" \
      --proxy-cmd "$wrap $registrar" --reg ext
  done
fi
if (( do_ramp )); then
  export RESULTS_DIR=$out
  for r in $(seq "${REPEATS:-1}"); do
    for label in embedded etcd; do
      wrap=""; [ $label = etcd ] && wrap=$clustered
      "$bench/run_matrix.sh" --repeats 1 --start-repeat "$r" --out-dir "$out/ramp-$label" \
        --proxy-cmd "$wrap $calls" --registrar-cmd "$wrap $registrar" \
        --ext-label "limes-$label" cps:ext reg:ext
    done
  done
fi
echo "results in $out"
[ -f "$out/cost.csv" ] && column -s, -t "$out/cost.csv"
for s in "$out"/ramp-*/summary.md; do [ -f "$s" ] && { echo "== $s"; cat "$s"; }; done
