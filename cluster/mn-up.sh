#!/usr/bin/env bash
# A multi-node SLURM cluster on one machine, for tests and CI: network namespaces mnctl (slurmctld, slurmdbd,
# MariaDB, munged; the "login" node) and mn1..mnN (one slurmd each, with its own hostname), joined by veth pairs
# to a bridge in namespace mnsw. Everything lives under $MN_DIR (own slurm.conf, munge key and socket, state,
# logs), so it runs beside the single-node cluster of slurm-up.sh (/etc/slurm, ports 6817-6819, 3306).
# The root namespace gets one link into the bridge (mnhost, .1): processes here can submit with
# SLURM_CONF=$MN_DIR/slurm.conf, and servers bound to .1 (S3, Prefect) are reachable from every node.
# Idempotent: if everything is up it only reports; otherwise it clears leftovers and starts afresh. Root only.
# Env: MN_DIR (/tmp/mn-slurm), MN_NODES (2), MN_CPUS (2 per node), MN_MEM (6000 MB per node), MN_NET (10.231.0),
#      MN_SLURMD_TIMEOUT (20 s: how long a silent node takes to be declared DOWN), MN_UP_TIMEOUT (60 s),
#      MN_WITH_DBD (1: accounting, so sacct and submitit see job states and earlier attempts).
# Use: $MN_DIR/mnexec mnctl sinfo   (run a command "on" a node: its netns, hostname, hosts file, SLURM_CONF)
set -euo pipefail
T0=$(date +%s%N)
D=${MN_DIR:-/tmp/mn-slurm}
NODES=${MN_NODES:-2}; CPUS=${MN_CPUS:-2}; MEM=${MN_MEM:-6000}; NET=${MN_NET:-10.231.0}
TIMEOUT=${MN_UP_TIMEOUT:-60}; DBD=${MN_WITH_DBD:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || { echo "mn-up: must run as root (network namespaces)" >&2; exit 1; }
NAMES="mnctl"; for i in $(seq "$NODES"); do NAMES="$NAMES mn$i"; done
ip_of() { case $1 in mnhost) echo "$NET.1";; mnctl) echo "$NET.10";; mn*) echo "$NET.$((10 + ${1#mn}))";; esac; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# 0. packages
. "$HERE/slurm-lib.sh"
slurm_install_packages "$DBD"
command -v ip >/dev/null && command -v nsenter >/dev/null || { echo "mn-up: needs iproute2 and util-linux" >&2; exit 1; }

# 1. mnexec: not `ip netns exec`, which remounts /sys (hiding /sys/fs/cgroup: slurmd 22.05 then fails to start).
#    A private mount namespace (slave propagation) bind-mounts our hosts file over /etc/hosts; root's is untouched.
mkdir -p "$D"
cat > "$D/mnexec" <<MNEXEC
#!/bin/bash
# usage: mnexec NODE CMD [ARGS...]   e.g. mnexec mnctl srun -N2 hostname
n=\$1; shift; [ \$# -gt 0 ] || set -- bash
export SLURM_CONF=$D/slurm.conf
exec nsenter --net=/run/netns/"\$n" unshare --mount --propagation slave --uts \\
  sh -c 'mount --bind $D/hosts /etc/hosts && hostname "\$0" && exec "\$@"' "\$n" "\$@"
MNEXEC
chmod +x "$D/mnexec"
cp "$HERE/mn-down.sh" "$D/mn-down.sh"

# 2. already up? (all daemons alive, every node answers, the root namespace's link is there)
up_ok() {
  alive $D/munge/munged.pid && alive $D/run/slurmctld.pid || return 1
  [ "$DBD" = 1 ] && { alive $D/db/mariadbd.pid && alive $D/run/slurmdbd.pid || return 1; }
  for i in $(seq "$NODES"); do alive $D/run/slurmd-mn$i.pid || return 1; done
  ip link show mnhost >/dev/null 2>&1 || return 1
  [ "$("$D/mnexec" mnctl sinfo -h -N -o '%N %T' 2>/dev/null | grep -cE ' (idle|mixed|allocated|completing)$')" = "$NODES" ]
}
if [ -f $D/slurm.conf ] && up_ok; then
  "$D/mnexec" mnctl sinfo; echo "mn-up: already up ($(( ($(date +%s%N) - T0) / 1000000 )) ms)"; exit 0
fi
MN_DIR=$D MN_KEEP_LOGS=1 bash "$HERE/mn-down.sh" >/dev/null 2>&1 || true   # clear any partial state

# 3. network: a bridge in mnsw; one veth per node (the node's side is eth0); mnhost is the root namespace's side
mkdir -p $D/state $D/run $D/log $D/jobs
ip netns add mnsw
ip -n mnsw link set lo up
ip -n mnsw link add br0 type bridge
ip -n mnsw link set br0 up
HOSTS="127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
$(ip_of mnhost) mnhost"
for n in $NAMES; do HOSTS="$HOSTS
$(ip_of $n) $n"; done
for n in $NAMES; do
  ip netns add $n
  ip -n mnsw link add sw-$n type veth peer name eth0 netns $n
  ip -n mnsw link set sw-$n master br0 up
  ip -n $n addr add "$(ip_of $n)/24" dev eth0
  ip -n $n link set lo up
  ip -n $n link set eth0 up
done
ip link add mnhost type veth peer name sw-host netns mnsw
ip -n mnsw link set sw-host master br0 up
ip addr add "$(ip_of mnhost)/24" dev mnhost
ip link set mnhost up
printf '%s\n' "$HOSTS" > $D/hosts

# 4. munge: own key, socket, pid, log, seed (one munged, in mnctl; its socket is reached through the filesystem)
install -d -o munge -g munge -m 0755 $D/munge
[ -s $D/munge/munge.key ] || mungekey --create --keyfile=$D/munge/munge.key --force
chown munge:munge $D/munge/munge.key; chmod 0400 $D/munge/munge.key
"$D/mnexec" mnctl runuser -u munge -- /usr/sbin/munged --socket=$D/munge/munge.socket \
  --key-file=$D/munge/munge.key --pid-file=$D/munge/munged.pid --log-file=$D/munge/munged.log \
  --seed-file=$D/munge/munged.seed
for _ in $(seq 50); do munge -S $D/munge/munge.socket -n 2>/dev/null | unmunge -S $D/munge/munge.socket \
  >/dev/null 2>&1 && break; sleep 0.1; done

# 5. slurm.conf. %n gives each slurmd its own spool, pid and log file. The state is wiped on each bring-up, so
#    FirstJobId comes from the clock: job ids are not reused (submitit would find an old result in jobs/<id>).
#    Accounting clients use the munge socket of AccountingStoragePass (AuthInfo's is not enough for them), and
#    AccountingStorageHost is an address: clients in the root namespace have no "mnctl" in their hosts file.
NODELINES=""; for i in $(seq "$NODES"); do NODELINES="${NODELINES}NodeName=mn$i NodeAddr=$(ip_of mn$i) CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
"; done
if [ "$DBD" = 1 ]; then ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$(ip_of mnctl)
AccountingStoragePass=$D/munge/munge.socket"; else ACCT="AccountingStorageType=accounting_storage/none"; fi
cat > $D/slurm.conf <<CONF
ClusterName=mn
SlurmctldHost=mnctl($(ip_of mnctl))
$(slurm_conf_common)
AuthInfo=socket=$D/munge/munge.socket,cred_expire=5
JobAcctGatherType=jobacct_gather/none
${ACCT}
StateSaveLocation=$D/state
FirstJobId=$(( $(date +%s) % 6000000 * 10 + 1 ))
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
SlurmdTimeout=${MN_SLURMD_TIMEOUT:-20}
${NODELINES}PartitionName=debug Nodes=mn[1-$NODES] Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=$((MEM / CPUS))
CONF

# 6. daemons (each daemonizes itself, inside its namespace, with its own hostname)
if [ "$DBD" = 1 ]; then  # MariaDB on mnctl's own 127.0.0.1:3306 (not the system one), fresh each time
  install -d -o mysql -g mysql -m 0755 $D/db
  mariadb-install-db --no-defaults --user=mysql --datadir=$D/db/data --auth-root-authentication-method=socket \
    --skip-test-db >$D/db/install.log 2>&1
  "$D/mnexec" mnctl sh -c "mariadbd --no-defaults --user=mysql --datadir=$D/db/data --socket=$D/db/mysqld.sock \
    --pid-file=$D/db/mariadbd.pid --log-error=$D/db/mariadbd.err --bind-address=127.0.0.1 --port=3306 \
    --skip-name-resolve --innodb-buffer-pool-size=32M --performance-schema=OFF </dev/null >/dev/null 2>&1 &"
  for _ in $(seq 100); do mariadb --no-defaults --socket=$D/db/mysqld.sock -e 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
  mariadb --no-defaults --socket=$D/db/mysqld.sock -e "CREATE DATABASE slurm_acct_db;
    CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
  cat > $D/slurmdbd.conf <<DBDCONF
AuthType=auth/munge
AuthInfo=socket=$D/munge/munge.socket
DbdHost=mnctl
DbdAddr=$(ip_of mnctl)
SlurmUser=root
PidFile=$D/run/slurmdbd.pid
LogFile=$D/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
DBDCONF
  chmod 600 $D/slurmdbd.conf   # slurmdbd reads it from dirname($SLURM_CONF)
  "$D/mnexec" mnctl slurmdbd
  for _ in $(seq 150); do "$D/mnexec" mnctl sacctmgr -n -P list cluster >/dev/null 2>&1 && break; sleep 0.2; done
  "$D/mnexec" mnctl sacctmgr -i add cluster mn >/dev/null
fi
"$D/mnexec" mnctl slurmctld
for _ in $(seq 100); do "$D/mnexec" mnctl scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
for i in $(seq "$NODES"); do mkdir -p $D/spool/mn$i; "$D/mnexec" mn$i slurmd -N mn$i; done

# 7. wait until every node is idle
deadline=$(( $(date +%s) + TIMEOUT ))
until [ "$("$D/mnexec" mnctl sinfo -h -N -o '%N %T' 2>/dev/null | grep -c ' idle$')" = "$NODES" ]; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "mn-up: nodes not idle after ${TIMEOUT}s" >&2; "$D/mnexec" mnctl sinfo -N >&2 || true
    tail -n 20 $D/log/*.log >&2; exit 1
  fi
  sleep 0.3
done
"$D/mnexec" mnctl sinfo
echo "mn-up: ready in $(( ($(date +%s%N) - T0) / 1000000 )) ms ($NODES nodes; login: $D/mnexec mnctl <cmd>;" \
     "from here: SLURM_CONF=$D/slurm.conf; servers for the nodes listen on $(ip_of mnhost))"
