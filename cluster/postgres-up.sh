#!/usr/bin/env bash
# Bring up PostgreSQL as the Prefect server's database (Debian 12's postgresql-15, no systemd): a cluster of its own
# (pg_createcluster, so a site's "main" cluster is never touched), a login role and a database for Prefect.
# Prints the PREFECT_API_DATABASE_CONNECTION_URL to give `prefect server start`, and how long it took.
# Idempotent: creates only what is missing and keeps the role's password (in a mode-600 file). Root only.
# Env: PG_VERSION (15), PG_CLUSTER (ito), PG_PORT (5433), PG_DB (prefect), PG_USER (prefect),
#      PG_SECRET (/etc/ito-sweep/<cluster>-<user>.password: the role's password; made if missing),
#      PG_MAX_CONNECTIONS (200: each Prefect server process pools up to 15 connections).
# Output: the last line is the URL (`PG_URL=$(cluster/postgres-up.sh | tail -1)`); messages go to stderr.
set -euo pipefail
T0=$(date +%s%N)
VER=${PG_VERSION:-15}; CL=${PG_CLUSTER:-ito}; PORT=${PG_PORT:-5433}
DB=${PG_DB:-prefect}; USR=${PG_USER:-prefect}; MAXCONN=${PG_MAX_CONNECTIONS:-200}
SECRET=${PG_SECRET:-/etc/ito-sweep/$CL-$USR.password}
[ "$(id -u)" = 0 ] || { echo "postgres-up: must run as root (or ask your admin for a PostgreSQL database)" >&2; exit 1; }
for name in "$DB" "$USR" "$CL"; do   # names go into SQL and paths unquoted: keep them plain
  [[ "$name" =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "postgres-up: '$name' is not a plain lower-case name" \
    "(PG_DB, PG_USER, PG_CLUSTER: letters, digits, _)" >&2; exit 1; }
done

# 1. packages (only if missing)
if [ ! -x "/usr/lib/postgresql/$VER/bin/postgres" ] || ! command -v pg_ctlcluster >/dev/null; then
  echo "postgres-up: installing postgresql-$VER" >&2
  export DEBIAN_FRONTEND=noninteractive
  for _ in $(seq 30); do apt-get update -qq && break; sleep 10; done
  for _ in $(seq 30); do apt-get install -y -qq --no-install-recommends "postgresql-$VER" >/dev/null && break; sleep 10; done
fi

# 2. the cluster: local connections by password (scram), loopback only
if ! pg_lsclusters -h | awk -v v="$VER" -v c="$CL" '$1 == v && $2 == c {found = 1} END {exit !found}'; then
  pg_createcluster "$VER" "$CL" --port "$PORT" -- --auth-local=peer --auth-host=scram-sha-256 >/dev/null
fi
CONF_DIR=/etc/postgresql/$VER/$CL
WANT="listen_addresses = '127.0.0.1'
port = $PORT
max_connections = $MAXCONN"
CONF_D=$CONF_DIR/conf.d/ito-sweep.conf
RESTART=0
if [ ! -f "$CONF_D" ] || [ "$WANT" != "$(cat "$CONF_D")" ]; then
  mkdir -p "$CONF_DIR/conf.d"; printf '%s\n' "$WANT" > "$CONF_D"; RESTART=1
fi

# 3. the server (pg_ctlcluster daemonizes it; no systemd needed)
STATUS=$(pg_lsclusters -h | awk -v v="$VER" -v c="$CL" '$1 == v && $2 == c {print $4}')
if [ "$STATUS" = online ] && [ "$RESTART" = 1 ]; then pg_ctlcluster "$VER" "$CL" restart
elif [ "$STATUS" != online ]; then pg_ctlcluster "$VER" "$CL" start; fi
for _ in $(seq 100); do runuser -u postgres -- psql -p "$PORT" -qAtc 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done

# 4. role and database: the password is made once and kept in a file only root reads
if [ ! -s "$SECRET" ]; then
  install -d -m 0700 "$(dirname "$SECRET")"
  (umask 077; python3 -c 'import secrets; print(secrets.token_hex(24))' > "$SECRET")
fi
PASS=$(cat "$SECRET")
psql_pg() { PGOPTIONS="-c client_min_messages=warning" runuser -u postgres -- psql -p "$PORT" -v ON_ERROR_STOP=1 -qAt "$@"; }
if [ "$(psql_pg -c "select 1 from pg_roles where rolname = '$USR'")" = 1 ]; then
  psql_pg -c "alter role $USR with login password '$PASS'" >/dev/null
else
  psql_pg -c "create role $USR with login password '$PASS'" >/dev/null
fi
[ "$(psql_pg -c "select 1 from pg_database where datname = '$DB'")" = 1 ] || psql_pg -c "create database $DB owner $USR"
# Prefect's migrations create the pg_trgm extension: only a superuser may, so make it here
psql_pg -d "$DB" -c "create extension if not exists pg_trgm" >/dev/null

echo "postgres-up: ready in $(( ($(date +%s%N) - T0) / 1000000 )) ms (PostgreSQL $VER cluster $CL on 127.0.0.1:$PORT," \
     "database $DB, role $USR; password in $SECRET)" >&2
echo "postgresql+asyncpg://$USR:$PASS@127.0.0.1:$PORT/$DB"
