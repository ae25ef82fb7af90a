#!/usr/bin/env bash
# Runs a load case against Limes and, where Kamailio is installed, against Kamailio with
# the matching configuration from ../shared/bench/kamailio/, interleaved, and prints both
# maximum sustained rates, both CPU costs per call, and their ratio.
#
# usage: loadtest/cases/run.sh CASE [REPEATS]
#   CASE: a folder here with case.env (RATES, STEP_S, CALL_LENGTH_MS, KAM_CFG) and
#         limes.toml (the node's configuration)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
case_dir="$here/${1:?usage: run.sh CASE [REPEATS]}"
repeats=${2:-1}
. "$case_dir/case.env"
: "${PROXY_PORT:=5070}" "${UAS_PORT:=5080}" "${THREADS:=2}" "${SOCKETS:=16}"
bench="$root/../shared/bench"
load="$root/target/release/limes-load"
limes="$root/target/release/limes"
[ -x "$load" ] && [ -x "$limes" ] || (cd "$root" && cargo build --release -p limes-node -p limes-loadtest)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# utime+stime of a process and its children, in clock ticks.
cpu_ticks() {
  local total=0 p
  for p in $(pgrep -P "$1") "$1"; do
    [ -r "/proc/$p/stat" ] || continue
    total=$(( total + $(awk '{print $14 + $15}' "/proc/$p/stat") ))
  done
  echo "$total"
}

wait_port() { for _ in $(seq 100); do ss -lun | grep -q ":$1 " && return 0; sleep 0.1; done; return 1; }

"$load" uas --listen "127.0.0.1:$UAS_PORT" --ring --threads 1 >/dev/null 2>&1 &
pids+=($!)
wait_port "$UAS_PORT"

# One ramp against the proxy started by "$@"; prints "max_rate us_per_call".
ramp() {
  "$@" >/dev/null 2>&1 &
  local proxy=$! best=0 cost=- rate
  pids+=("$proxy")
  wait_port "$PROXY_PORT" || { echo "0 -"; return; }
  sleep 1
  local hz; hz=$(getconf CLK_TCK)
  for rate in $RATES; do
    local before after report ok
    before=$(cpu_ticks "$proxy")
    if report=$("$load" uac --target "sip:service@127.0.0.1:$UAS_PORT" --proxy "127.0.0.1:$PROXY_PORT" \
        --rate "$rate" --duration "$STEP_S" --call-length "$CALL_LENGTH_MS" \
        --threads "$THREADS" --sockets "$SOCKETS" --json 2>/dev/null); then ok=1; else ok=0; fi
    after=$(cpu_ticks "$proxy")
    local done_calls; done_calls=$(echo "$report" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["completed"])')
    [ "$ok" = 1 ] || break
    best=$rate
    cost=$(python3 -c "print(round(($after - $before) / $hz / max($done_calls, 1) * 1e6, 1))")
  done
  kill "$proxy" 2>/dev/null || true
  wait "$proxy" 2>/dev/null || true
  echo "$best $cost"
}

printf '%-10s %-7s %-22s %-20s\n' kind repeat "max sustained calls/s" "CPU us/call @max"
for r in $(seq "$repeats"); do
  set -- $(ramp "$limes" run --config "$case_dir/limes.toml" --listen "udp:127.0.0.1:$PROXY_PORT" \
      --next-hop "sip:127.0.0.1:$UAS_PORT" --admin 127.0.0.1:18080)
  limes_rate=$1 limes_cost=$2
  printf '%-10s %-7s %-22s %-20s\n' limes "$r" "$limes_rate" "$limes_cost"
  if command -v kamailio >/dev/null && [ -n "${KAM_CFG:-}" ]; then
    set -- $(ramp "$bench/kam.sh" run "$bench/kamailio/$KAM_CFG" "$PROXY_PORT" --next-hop "sip:127.0.0.1:$UAS_PORT")
    kam_rate=$1 kam_cost=$2
    printf '%-10s %-7s %-22s %-20s\n' kamailio "$r" "$kam_rate" "$kam_cost"
    python3 - "$r" "$limes_rate" "$kam_rate" "$limes_cost" "$kam_cost" <<'PY'
import sys
r, lr, kr, lc, kc = sys.argv[1:]
def ratio(a, b):
    try:
        return f"{float(a) / float(b):.2f}"
    except (ValueError, ZeroDivisionError):
        return "-"
print(f"{'ratio':<10} {r:<7} rate limes/kamailio {ratio(lr, kr)}   cost limes/kamailio {ratio(lc, kc)}")
PY
  fi
done
