#!/usr/bin/env bash
# User-space instructions per call of one side of the generator, counted by callgrind
# (repeatable whatever else the machine does): the other side runs natively.
#
# usage: loadtest/cases/generator-ceiling/cost.sh uac|uas [RATE] [SECONDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
side=${1:?usage: cost.sh uac|uas [RATE] [SECONDS]}
rate=${2:-1000} secs=${3:-5} port=${PORT:-6080}
load="$root/target/release/limes-load"
[ -x "$load" ] || (cd "$root" && cargo build --release -p limes-loadtest)
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

# The UAS stops by itself once the calls are over (a background job ignores SIGINT).
uas=("$load" uas --listen "127.0.0.1:$port" --ring --threads 1 --duration "$((secs + 8))")
uac=("$load" uac --target "sip:service@127.0.0.1:$port" --proxy "127.0.0.1:$port"
  --rate "$rate" --duration "$secs" --call-length 1000 --threads 1 --sockets 4)
cg=(valgrind --tool=callgrind "--callgrind-out-file=$out/cg.%p")
case $side in
  uac)
    "${uas[@]}" >/dev/null 2>&1 &
    sleep 0.5
    "${cg[@]}" "${uac[@]}" >"$out/uac.txt" 2>/dev/null
    ;;
  uas)
    "${cg[@]}" "${uas[@]}" >/dev/null 2>&1 &
    sleep 3
    "${uac[@]}" >"$out/uac.txt" 2>&1
    wait
    ;;
  *) echo "usage: cost.sh uac|uas [RATE] [SECONDS]" >&2; exit 2 ;;
esac
grep -o 'failed [0-9]* ([0-9.]* %)' "$out/uac.txt" || true
total=$(grep -h '^summary:' "$out"/cg.* | awk '{s += $2} END {print s}')
echo "$side: $total instructions for $((rate * secs)) calls, $((total / (rate * secs))) per call (start-up included)"
