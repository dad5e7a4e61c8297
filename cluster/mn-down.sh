#!/usr/bin/env bash
# Tear down the cluster of mn-up.sh. Idempotent. Ends only its processes, by PID: the daemons from their pid
# files, then every process still inside one of its network namespaces (`ip netns pids`: job steps, slurmstepd,
# mnexec shells); deleting the namespaces removes the links, mnhost included. MN_KEEP_LOGS=1 keeps log/.
set -uo pipefail
D=${MN_DIR:-/tmp/mn-slurm}
NSS=$(ip netns list 2>/dev/null | awk '$1 ~ /^mn(ctl|sw|[0-9]+)$/ {print $1}')
PIDS=""
for f in $D/run/slurmd-*.pid $D/run/slurmctld.pid $D/run/slurmdbd.pid $D/db/mariadbd.pid $D/munge/munged.pid; do
  [ -s "$f" ] || continue
  p=$(cat "$f"); kill -0 "$p" 2>/dev/null || continue
  # a stale pid file must not hit someone else's process: ours never live in the root network namespace
  [ "$(readlink /proc/$p/ns/net)" != "$(readlink /proc/1/ns/net)" ] && PIDS="$PIDS $p"
done
for n in $NSS; do PIDS="$PIDS $(ip netns pids "$n" 2>/dev/null | tr '\n' ' ')"; done
PIDS=$(echo $PIDS | tr ' ' '\n' | grep -E '^[0-9]+$' | grep -vx "$$" | sort -un | tr '\n' ' ')
[ -n "${PIDS// }" ] && kill -TERM $PIDS 2>/dev/null
left=""
for _ in $(seq 100); do
  left=""; for p in $PIDS; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
  [ -z "$left" ] && break; sleep 0.1
done
[ -n "$left" ] && { echo "mn-down: SIGKILL$left"; kill -KILL $left 2>/dev/null; sleep 0.2; }
for n in $NSS; do ip netns del "$n" 2>/dev/null; done
ip link del mnhost 2>/dev/null
rm -rf $D/state $D/spool $D/run $D/db
[ "${MN_KEEP_LOGS:-0}" = 1 ] || rm -rf $D/log
rm -f $D/munge/munged.pid $D/munge/munge.socket $D/munge/munge.socket.lock
echo "mn-down: stopped${PIDS:+ pids $PIDS}; namespaces left: $(ip netns list | grep -cE '^mn(ctl|sw|[0-9]+)\b')"
