#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the database tests and print its URL.
# Installs the Debian `postgresql` package when the server binaries are missing.
set -euo pipefail

initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$initdb" ]; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  initdb=$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)
fi
bin=$(dirname "$initdb")
port=${CROSSPROMO_PG_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
dir=$(mktemp -d /tmp/crosspromo-pg.XXXXXX)
chown postgres "$dir" 2>/dev/null || true
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
as_pg "'$bin/initdb' -D '$dir/data' -A trust -U crosspromo >/dev/null"
if ! as_pg "'$bin/pg_ctl' -D '$dir/data' -l '$dir/log' -w -o \"-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off\" start >/dev/null"; then
  cat "$dir/log" >&2
  exit 1
fi
as_pg "'$bin/createdb' -h 127.0.0.1 -p $port -U crosspromo crosspromo_test"
echo "postgresql+psycopg://crosspromo@127.0.0.1:$port/crosspromo_test"
