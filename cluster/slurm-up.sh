#!/usr/bin/env bash
# Bring up a single-node SLURM cluster for tests and CI (Debian 12, no systemd): munge + slurmctld + slurmd,
# and by default MariaDB + slurmdbd so `sacct` works and submitit sees real job states (CANCELLED, FAILED, ...).
# Idempotent: safe to call repeatedly (rewrites slurm.conf and restarts daemons only if it changed).
# Installs missing Debian packages itself. Must run as root. Prints how long it took.
# Env: SLURM_WITH_DBD (1; 0 = no accounting, sacct fails), SLURM_PARTITION (debug), SLURM_UP_TIMEOUT (60 s),
#      SLURM_CPUS (nproc; more oversubscribes), SLURM_DEF_MEM_PER_CPU (the node's memory / CPUs, in MB),
#      SLURM_UP_FORCE=1 (replace an /etc/slurm/slurm.conf this script did not write).
set -euo pipefail
T0=$(date +%s%N)
PART=${SLURM_PARTITION:-debug}
TIMEOUT=${SLURM_UP_TIMEOUT:-60}
WITH_DBD=${SLURM_WITH_DBD:-1}
[ "$(id -u)" = 0 ] || { echo "slurm-up: must run as root (or ask your admin for a SLURM cluster)" >&2; exit 1; }

# 1. packages (only what is missing)
. "$(dirname "$0")/slurm-lib.sh"
slurm_install_packages "$WITH_DBD"

# 2. the host name must resolve (slurmd -N, SlurmctldHost)
H=$(hostname -s)
getent hosts "$H" >/dev/null || echo "127.0.0.1 $H" >> /etc/hosts

# 3. munge key and dirs (Debian's postinst normally creates the key)
install -d -o munge -g munge -m 0700 /etc/munge
install -d -o munge -g munge -m 0755 /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key --force
  else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
fi
chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm /etc/slurm

# 4. slurm.conf: one node at 127.0.0.1 (shared choices: slurm-lib.sh). jobacct_gather/linux + OverMemoryKill: a
#    step that outgrows its --mem is killed ("exceeded memory limit"), as a real cluster's cgroup limit would,
#    without cgroups. DefMemPerCPU: else a job without --mem takes the whole node.
CPUS=${SLURM_CPUS:-$(nproc)}
MEM=$(( $(free -m | awk '/^Mem:/{print $2}') - 1024 ))
DEF_MEM=${SLURM_DEF_MEM_PER_CPU:-$(( MEM / CPUS ))}  # jobs without --mem get their CPUs' share of the node
if [ "$WITH_DBD" = 1 ]; then ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=${H}"; else ACCT="AccountingStorageType=accounting_storage/none"; fi
CONF=$(cat <<EOF
ClusterName=ci
SlurmctldHost=${H}
$(slurm_conf_common)
AuthInfo=cred_expire=5
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
${ACCT}
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmdTimeout=30
NodeName=${H} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN
PartitionName=${PART} Nodes=${H} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO DefMemPerCPU=${DEF_MEM}
EOF
)
if [ -f /etc/slurm/slurm.conf ] && ! grep -qx 'ClusterName=ci' /etc/slurm/slurm.conf && [ "${SLURM_UP_FORCE:-0}" != 1 ]; then
  echo "slurm-up: /etc/slurm/slurm.conf was not written by this script (no ClusterName=ci): not touching a real" \
       "cluster's config; set SLURM_UP_FORCE=1 to replace it" >&2; exit 1
fi
CHANGED=0
if [ ! -f /etc/slurm/slurm.conf ] || [ "$CONF" != "$(cat /etc/slurm/slurm.conf)" ]; then
  printf '%s\n' "$CONF" > /etc/slurm/slurm.conf; CHANGED=1
fi
# Slurm 22.05 (bookworm) has no CgroupPlugin=disabled: leave cgroup.conf absent. >= 23.11 needs "disabled" here.
VER=$(slurmctld -V | awk '{print $2}')
if dpkg --compare-versions "$VER" ge 23.11; then
  echo "CgroupPlugin=disabled" > /etc/slurm/cgroup.conf
elif grep -qs 'CgroupPlugin=disabled' /etc/slurm/cgroup.conf; then rm -f /etc/slurm/cgroup.conf; fi

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# 5. daemons (each daemonizes itself; pid files in /run)
if ! alive /run/munge/munged.pid || ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
if [ "$CHANGED" = 1 ]; then   # config changed: restart the slurm daemons
  for p in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid; do alive "$p" && kill "$(cat "$p")" || true; done
  for _ in $(seq 50); do alive /run/slurm/slurmd.pid || alive /run/slurm/slurmctld.pid || break; sleep 0.2; done
fi
if [ "$WITH_DBD" = 1 ]; then
  if ! mariadb-admin ping >/dev/null 2>&1; then
    /etc/init.d/mariadb start >/dev/null; touch /run/slurm/mariadb.started-by-us
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
              CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=${H}
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
EOF
  chmod 600 /etc/slurm/slurmdbd.conf
  alive /run/slurm/slurmdbd.pid || slurmdbd
  for _ in $(seq 100); do sacctmgr -n -P list cluster >/dev/null 2>&1 && break; sleep 0.2; done
  sacctmgr -n -P list cluster format=cluster | grep -qx ci || sacctmgr -i add cluster ci >/dev/null
fi
alive /run/slurm/slurmctld.pid || slurmctld
for _ in $(seq 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
alive /run/slurm/slurmd.pid || slurmd -N "$H"

# 6. wait until the node takes jobs
deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
  st=$(sinfo -h -n "$H" -o '%T' 2>/dev/null | head -1 || true)
  case "$st" in
    idle|mixed|allocated|completing) break;;
    *drain*|down*) scontrol update nodename="$H" state=resume >/dev/null 2>&1 || true;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "slurm-up: node $H not ready after ${TIMEOUT}s (state='$st')" >&2
    tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2; exit 1
  fi
  sleep 0.5
done
if [ "$WITH_DBD" = 1 ]; then  # sacct answers (accounting reached) before we call it ready
  for _ in $(seq 50); do sacct -n -X -S now >/dev/null 2>&1 && break; sleep 0.2; done
fi
sinfo
echo "slurm-up: ready in $(( ($(date +%s%N) - T0) / 1000000 )) ms (slurm $VER, accounting=$([ "$WITH_DBD" = 1 ] && echo slurmdbd || echo none))"
