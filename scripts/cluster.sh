# shellcheck shell=bash
# Throwaway local PostgreSQL 15 clusters for the demo and benchmark scripts.
# Source this file, then:
#
#   run_setup                                    # scripts/setup.sh (skip: LOGICAL_EXT_SKIP_SETUP=1)
#   cluster_start pub                            # initdb + start; prints nothing on success
#   cluster_start sub "logical_ext" "work_mem = '64MB'"   # with shared_preload_libraries + extra lines
#   cluster_psql pub -c 'SELECT 1'               # psql on that cluster (ON_ERROR_STOP, no psqlrc)
#   cluster_conninfo pub                         # "host=127.0.0.1 port=NNNN user=postgres dbname=postgres"
#
# Every cluster lives under one mktemp directory in /tmp, owned by the `postgres`
# OS user (PostgreSQL refuses to run as root). An EXIT trap stops every cluster
# and removes the directory, whatever way the script ends.

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
CLUSTER_BASE=""
declare -A CLUSTER_PORT=() CLUSTER_DIR=()

# Run a command as the postgres OS user (directly when we are not root).
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

run_setup() {
  if [ "${LOGICAL_EXT_SKIP_SETUP:-0}" = 1 ]; then return; fi
  "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
}

# A loopback TCP port nobody listens on (connect refused => free).
free_port() {
  local port
  for _ in $(seq 200); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"; return 0
    fi
  done
  echo "no free port found" >&2; return 1
}

cluster_cleanup() {
  local status=$? name dir
  for name in "${!CLUSTER_DIR[@]}"; do
    dir=${CLUSTER_DIR[$name]}
    if [ "$status" -ne 0 ] && [ -f "$dir/server.log" ]; then
      echo "--- last lines of the $name server log ($dir/server.log)" >&2
      tail -n 20 "$dir/server.log" >&2
    fi
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -t 60 -w stop >/dev/null 2>&1 ||
        as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
  done
  if [ -n "$CLUSTER_BASE" ]; then rm -rf "$CLUSTER_BASE"; fi
  return "$status"
}

# cluster_start NAME [SHARED_PRELOAD_LIBRARIES [EXTRA_CONF_LINE...]]
cluster_start() {
  local name=$1 preload=${2:-} dir port
  shift $(( $# < 2 ? $# : 2 ))
  if [ -z "$CLUSTER_BASE" ]; then
    CLUSTER_BASE=$(mktemp -d /tmp/logical_ext.XXXXXX)
    chown postgres: "$CLUSTER_BASE" 2>/dev/null || true
    trap cluster_cleanup EXIT
    trap 'exit 130' INT TERM
  fi
  dir=$CLUSTER_BASE/$name
  as_pg mkdir -p "$dir/sock"
  as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
  port=$(free_port)
  {
    echo "# added by scripts/cluster.sh"
    echo "port = $port"
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = '$dir/sock'"
    echo "wal_level = logical"
    echo "max_replication_slots = 20"
    echo "max_wal_senders = 20"
    echo "max_worker_processes = 20"
    echo "track_commit_timestamp = on"
    echo "output_plugin_libraries = 'pgoutput, test_decoding, wal2json, logical_ext'"
    if [ -n "$preload" ]; then echo "shared_preload_libraries = '$preload'"; fi
    local line
    for line in "$@"; do echo "$line"; done
  } | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
  CLUSTER_DIR[$name]=$dir
  CLUSTER_PORT[$name]=$port
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
}

# cluster_psql NAME [psql arguments...]
cluster_psql() {
  local name=$1; shift
  "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "${CLUSTER_DIR[$name]}/sock" \
    -p "${CLUSTER_PORT[$name]}" -U postgres -d postgres "$@"
}

cluster_conninfo() {
  echo "host=127.0.0.1 port=${CLUSTER_PORT[$1]} user=postgres dbname=postgres"
}
