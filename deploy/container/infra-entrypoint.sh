#!/bin/sh
# Starts one backing service in the foreground: postgres, redis or s3.
set -eu
case "${1:-}" in
  postgres)
    data=/var/lib/postgresql/data
    install -d -o postgres -g postgres -m 0700 "$data"
    if [ ! -s "$data/PG_VERSION" ]; then
      runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D "$data" -U postgres --auth=trust >/dev/null
      echo "host all all 0.0.0.0/0 trust" >> "$data/pg_hba.conf"
      runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$data" -o "-c listen_addresses=''" -w start >/dev/null
      runuser -u postgres -- psql -q -c "CREATE DATABASE reelsmith"
      runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$data" -w stop >/dev/null
    fi
    exec runuser -u postgres -- /usr/lib/postgresql/15/bin/postgres -D "$data" -c listen_addresses='*'
    ;;
  redis)
    exec redis-server --bind 0.0.0.0 --protected-mode no --save '' --appendonly no --maxmemory 512mb --maxmemory-policy allkeys-lru
    ;;
  s3)
    exec python3 -m moto.server -H 0.0.0.0 -p 9000
    ;;
  *)
    echo "usage: infra-entrypoint postgres|redis|s3" >&2
    exit 2
    ;;
esac
