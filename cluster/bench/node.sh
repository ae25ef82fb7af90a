#!/usr/bin/env bash
# Runs a Limes node command as a member of the etcd cluster at URLS (comma separated),
# after clearing the bindings and members earlier runs left in etcd (so every node
# lifetime of a benchmark starts as an embedded one does: with none).
#
# usage: cluster/bench/node.sh URLS COMMAND [ARG...]
set -euo pipefail
urls=${1:?usage: node.sh URLS COMMAND [ARG...]}
shift
first=${urls%%,*}
b64() { printf %s "$1" | base64 -w0; }
for prefix in /limes/v1/location/ /limes/v1/member/; do
  end="${prefix%/}0"
  curl -sf -X POST "$first/v3/kv/deleterange" \
    -d "{\"key\":\"$(b64 "$prefix")\",\"range_end\":\"$(b64 "$end")\"}" >/dev/null
done
export LIMES_ETCD=$urls LIMES_NODE_NAME=${LIMES_NODE_NAME:-bench}
exec "$@"
