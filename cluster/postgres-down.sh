#!/usr/bin/env bash
# Stop the PostgreSQL cluster of postgres-up.sh. Idempotent. PG_DROP=1 also deletes it (its data, every database in
# it) and the role's password file. Env as postgres-up.sh: PG_VERSION (15), PG_CLUSTER (ito), PG_USER, PG_SECRET.
set -uo pipefail
VER=${PG_VERSION:-15}; CL=${PG_CLUSTER:-ito}; USR=${PG_USER:-prefect}
SECRET=${PG_SECRET:-/etc/ito-sweep/$CL-$USR.password}
[ "$(id -u)" = 0 ] || { echo "postgres-down: must run as root" >&2; exit 1; }
STATUS=$(pg_lsclusters -h 2>/dev/null | awk -v v="$VER" -v c="$CL" '$1 == v && $2 == c {print $4}')
[ "$STATUS" = online ] && pg_ctlcluster "$VER" "$CL" stop -m fast
if [ "${PG_DROP:-0}" = 1 ] && [ -n "$STATUS" ]; then
  pg_dropcluster "$VER" "$CL"; rm -f "$SECRET"
fi
echo "postgres-down: cluster $VER/$CL ${STATUS:+was $STATUS, }now $(pg_lsclusters -h 2>/dev/null | awk -v v="$VER" \
  -v c="$CL" '$1 == v && $2 == c {print $4}' | grep . || echo absent)"
