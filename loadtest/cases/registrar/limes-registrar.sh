#!/usr/bin/env bash
# Starts Limes as the registrar of the bench users, the way an operator moves over from
# Kamailio: the subscriber table is written in Kamailio's db_text format (the scheme of
# ../shared/bench/kamailio/gen_subscribers.sh), imported with `limes import dbtext`, then
# the node runs in the foreground.
#
# usage: limes-registrar.sh PORT [USERS] [STATE_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
port=${1:?usage: limes-registrar.sh PORT [USERS] [STATE_DIR]}
users=${2:-10000}
state=${3:-$(mktemp -d /tmp/limes-registrar-XXXXXX)}
limes="$root/target/release/limes"
[ -x "$limes" ] || (cd "$root" && cargo build --release -p limes-node)
tables="$state/dbtext"
mkdir -p "$tables"
{
  echo "id(int,auto) username(string) domain(string) password(string) ha1(string,null) ha1b(string,null) "
  awk -v n="$users" 'BEGIN { for (i = 1; i <= n; i++) printf "%d:user%06d:bench.local:pw%06d::\n", i, i, i }'
} > "$tables/subscriber"
# Into the node's own state directory, even when LIMES_ETCD makes the node a member.
env -u LIMES_ETCD "$limes" import dbtext "$tables" --state-dir "$state/state" >/dev/null
exec "$limes" run --config "$here/limes.toml" --listen "udp:127.0.0.1:$port" \
  --admin 127.0.0.1:18080 --state-dir "$state/state"
