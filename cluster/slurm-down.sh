#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by cluster/slurm-up.sh (cancels its jobs first).
# `--purge` also wipes job state and logs. Idempotent: stopping a stopped cluster is a no-op.
set -u
T0=$(date +%s%N)
stop() { [ -s "$1" ] || return 0; local p; p=$(cat "$1"); kill "$p" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.2; done; kill -9 "$p" 2>/dev/null; }
if command -v squeue >/dev/null && [ -s /run/slurm/slurmctld.pid ]; then
  squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
fi
stop /run/slurm/slurmd.pid; stop /run/slurm/slurmctld.pid; stop /run/slurm/slurmdbd.pid
if [ -e /run/slurm/mariadb.started-by-us ]; then
  /etc/init.d/mariadb stop >/dev/null 2>&1; rm -f /run/slurm/mariadb.started-by-us
fi
stop /run/munge/munged.pid
rm -f /run/slurm/*.pid
if [ "${1:-}" = "--purge" ]; then rm -rf /var/spool/slurmctld/* /var/spool/slurmd/* /var/log/slurm/*.log; fi
echo "slurm-down: stopped in $(( ($(date +%s%N) - T0) / 1000000 )) ms"
