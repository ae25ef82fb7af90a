#!/usr/bin/env bash
# The overview dashboard from live data: a node (release build), a Prometheus scraping it
# every 2 s, a few minutes of limes-load traffic (calls to a UAS through the node,
# registrations with digest, a share of wrong passwords and calls to nobody), then
# dashboards/plot.py draws each overview panel from the same PromQL.
#
# usage: dashboards/live.sh [OUT.png] [SECONDS]       (default dashboards/overview.png, 240)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=${1:-$here/overview.png}
seconds=${2:-240}
work=$(mktemp -d)
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap stop EXIT
(cd "$root" && cargo build --release -q -p limes-node -p limes-loadtest)
load=$root/target/release/limes-load
awk 'BEGIN { for (i = 1; i <= 500; i++) printf "user%06d,pw%06d,bench.local\n", i, i }' >"$work/users.csv"
awk 'BEGIN { for (i = 1; i <= 20; i++) printf "user%06d,wrong,bench.local\n", i }' >"$work/wrong.csv"
{
  printf '[flood]\nrate = 1000000\nburst = 2000000\n\n[auth]\nalgorithms = ["MD5"]\nmax_failures = 1000000\n\n'
  printf '[[trusted]]\ncidr = "127.0.0.2/32"\n\n[[route]]\nname = "to-uas"\nsource = "trusted"\nuser = "prefix:svc"\naction = "relay:sip:127.0.0.1:15080"\n\n'
  printf '[[route]]\nname = "nobody"\nsource = "trusted"\naction = "reply:404 Not Here"\n\n'
  awk 'BEGIN { for (i = 1; i <= 500; i++) printf "[[subscriber]]\nuser = \"user%06d\"\ndomain = \"bench.local\"\npassword = \"pw%06d\"\n\n", i, i }'
} >"$work/limes.toml"
"$root/target/release/limes" run --config "$work/limes.toml" --listen udp:127.0.0.1:15060 \
  --admin 127.0.0.1:15069 --state-dir "$work/state" >"$work/node.log" 2>&1 &
pids+=($!)
printf 'global:\n  scrape_interval: 2s\nscrape_configs:\n  - job_name: limes\n    static_configs:\n      - targets: ["127.0.0.1:15069"]\n        labels: { instance: edge-1 }\n' >"$work/prometheus.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address=127.0.0.1:15090 >"$work/prometheus.log" 2>&1 &
pids+=($!)
"$load" uas --listen 127.0.0.1:15080 --ring --threads 1 >/dev/null 2>&1 &
pids+=($!)
sleep 3
# Calls: a ramp up and down; registrations: steady, some with wrong passwords; calls to nobody.
"$load" uac --target sip:svc@127.0.0.1:15060 --proxy 127.0.0.1:15060 --local 127.0.0.2 \
  --ramp "50,100,200,300,200,100" --duration $((seconds / 6)) --call-length 3000 \
  --threads 1 --max-fail-pct 100 >/dev/null 2>&1 &
pids+=($!)
"$load" register --registrar 127.0.0.1:15060 --users "$work/users.csv" --rate 40 \
  --duration "$seconds" --expires 300 --threads 1 --max-fail-pct 100 >/dev/null 2>&1 &
pids+=($!)
"$load" register --registrar 127.0.0.1:15060 --users "$work/wrong.csv" --rate 2 \
  --duration "$seconds" --threads 1 --max-fail-pct 100 >/dev/null 2>&1 &
pids+=($!)
"$load" uac --target sip:nobody@127.0.0.1:15060 --proxy 127.0.0.1:15060 --local 127.0.0.2 \
  --rate 5 --duration "$seconds" --threads 1 --max-fail-pct 100 >/dev/null 2>&1 &
pids+=($!)
sleep $((seconds + 10))
(cd "$here" && python3 plot.py http://127.0.0.1:15090 "$out" --minutes $(( (seconds + 20) / 60 + 1 )) --step 5)
echo "$out"
