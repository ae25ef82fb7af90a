#!/usr/bin/env bash
# The generator's own ceiling beside sipp's, in the same run: limes-load uac -> limes-load
# uas directly, then sipp UAC -> sipp UAS directly (../shared/bench/cps_ramp.sh direct),
# alternately REPEATS times, the highest passing rate of each and their ratio per pair.
#
# usage: loadtest/cases/generator-ceiling/run.sh [REPEATS]
#   LOAD_RATES, SIPP_RATES: ascending steps (calls/s); STEP_S: seconds per step;
#   PORT: the limes-load UAS port; RESULTS_DIR: where cps_ramp.sh writes its CSVs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
repeats=${1:-3}
: "${LOAD_RATES:=28000 32000 36000 40000 44000 48000 52000 56000 60000}"
: "${SIPP_RATES:=6000 8000 10000 12000 14000 16000 18000 20000}"
: "${STEP_S:=10}" "${PORT:=6080}" "${RESULTS_DIR:=/tmp/bench}"
bench="$root/../shared/bench"
load="$root/target/release/limes-load"
[ -x "$load" ] || (cd "$root" && cargo build --release -p limes-loadtest)

uas=
cleanup() { [ -z "$uas" ] || kill "$uas" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# The highest step of LOAD_RATES with < 0.1 % failed calls (each step a fresh UAC, 2 s
# apart, as cps_ramp.sh does for sipp); 0 if the first fails.
limes_load_ceiling() {
  "$load" uas --listen "127.0.0.1:$PORT" --ring --threads 2 >/dev/null 2>&1 &
  uas=$!
  sleep 1
  local best=0 rate
  for rate in $LOAD_RATES; do
    "$load" uac --target "sip:service@127.0.0.1:$PORT" --proxy "127.0.0.1:$PORT" \
      --rate "$rate" --duration "$STEP_S" --call-length 1000 --threads 2 --sockets 4 \
      --max-concurrent 1000000 >/dev/null 2>&1 || break
    best=$rate
    sleep 2
  done
  kill "$uas" 2>/dev/null || true
  wait "$uas" 2>/dev/null || true
  uas=
  echo "$best"
}

sipp_ceiling() {
  (cd "$bench" && RESULTS_DIR=$RESULTS_DIR ./cps_ramp.sh --rates "$SIPP_RATES" \
    --step-s "$STEP_S" --label sipp-direct direct 2>&1) |
    sed -nE 's/.*max sustained ([0-9]+)\/s.*/\1/p' | tail -1
}

printf '%-7s %-9s %-20s %-14s %s\n' repeat time "limes-load calls/s" "sipp calls/s" ratio
for r in $(seq "$repeats"); do
  at=$(date +%H:%M)
  ours=$(limes_load_ceiling)
  theirs=$(sipp_ceiling)
  ratio=$(python3 -c "import sys; a, b = map(float, sys.argv[1:]); print(f'{a / b:.2f}' if b else '-')" "$ours" "${theirs:-0}")
  printf '%-7s %-9s %-20s %-14s %s\n' "$r" "$at" "$ours" "${theirs:-0}" "$ratio"
done
