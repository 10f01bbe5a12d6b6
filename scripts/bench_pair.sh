# The publisher/subscriber pair shared by scripts/bench_apply.sh and
# scripts/bench_sync.sh (sourced after scripts/cluster.sh): clusters `pub`
# and `sub`, one subscriber database per kind of subscription, and the
# 8 mixed-type columns every benchmark writes (as scripts/bench_decode.sh).

say() { echo "== $*" >&2; }
pub() { cluster_psql pub "$@"; }
# sub DB [psql arguments...]
sub() { local db=$1; shift; PGOPTIONS="-c client_min_messages=warning" cluster_psql sub -d "$db" "$@"; }
# database of each kind of subscription on the subscriber
declare -A DB=([native]=native [logical_ext]=le)

ROW_SQL="g, (g % 100000)::int, (g % 1000) / 7.0::float8,
  timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second',
  (g % 100000) * 1.01, md5(g::text), g % 2 = 0,
  jsonb_build_object('id', g, 'tag', 'item-' || g % 10, 'ok', g % 3 = 0)"
