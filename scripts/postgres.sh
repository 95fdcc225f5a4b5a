#!/usr/bin/env bash
# A throwaway PostgreSQL on 127.0.0.1 with its own data dir, for tests and benchmarks.
#   scripts/postgres.sh start [DATA_DIR] [PORT]   install the Debian package if missing, initdb, start;
#                                                 prints the database URL on stdout
#   scripts/postgres.sh stop  [DATA_DIR]          stop it (fast shutdown)
#   scripts/postgres.sh url   [DATA_DIR] [PORT]   print the URL again
# Defaults: DATA_DIR=/tmp/edgemine-pg, PORT=54329. PostgreSQL refuses to run as root, so as root the
# server runs as the `postgres` user (created by the package). Trust auth on loopback only: a test server.
set -euo pipefail

cmd=${1:-}
data=${2:-/tmp/edgemine-pg}
port=${3:-54329}
dbname=edgemine
dbuser=edgemine

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    if [[ -x "$d/pg_ctl" ]]; then echo "$d"; return 0; fi
  done
  return 1
}

ensure_installed() {
  if ! pg_bin >/dev/null; then
    if [[ $(id -u) -ne 0 ]]; then
      echo "PostgreSQL is missing and installing it needs root: apt-get install postgresql" >&2
      exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  fi
}

as_owner() {  # run a command as the data dir's owner (postgres when we are root)
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

url() { echo "postgresql://${dbuser}@127.0.0.1:${port}/${dbname}"; }

case "$cmd" in
  start)
    ensure_installed
    bin=$(pg_bin)
    mkdir -p "$data"
    if [[ $(id -u) -eq 0 ]]; then chown postgres: "$data"; chmod 700 "$data"; fi
    if [[ ! -f "$data/PG_VERSION" ]]; then
      as_owner "$bin/initdb" -D "$data" -U "$dbuser" --auth=trust --encoding=UTF8 --no-locale >"$data.initdb.log" 2>&1 \
        || { cat "$data.initdb.log" >&2; exit 1; }
    fi
    if ! as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      as_owner "$bin/pg_ctl" -D "$data" -w -t 60 -l "$data/server.log" \
        -o "-p $port -c listen_addresses=127.0.0.1 -k $data -c max_connections=200" start >/dev/null \
        || { cat "$data/server.log" >&2; exit 1; }
    fi
    if ! as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U "$dbuser" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname='$dbname'" | grep -q 1; then
      as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U "$dbuser" "$dbname"
    fi
    url
    ;;
  stop)
    if bin=$(pg_bin) && [[ -f "$data/PG_VERSION" ]]; then
      as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    ;;
  url)
    url
    ;;
  *)
    echo "usage: $0 start|stop|url [DATA_DIR] [PORT]" >&2
    exit 2
    ;;
esac
