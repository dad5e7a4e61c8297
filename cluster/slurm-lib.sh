# Shared by slurm-up.sh (one node) and mn-up.sh (several nodes in network namespaces): sourced, not run.

# Install the Debian SLURM packages that are missing (with accounting: slurmdbd + MariaDB). Retries while
# another apt holds the lock (CI images sometimes run unattended upgrades at boot).
slurm_install_packages() {  # $1: 1 = with accounting
  local pkgs="slurmctld slurmd slurm-client munge" missing=0 c
  [ "$1" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
  for c in slurmctld slurmd sbatch munged; do command -v $c >/dev/null || missing=1; done
  if [ "$1" = 1 ]; then command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null || missing=1; fi
  [ "$missing" = 1 ] || return 0
  echo "slurm: installing $pkgs" >&2
  export DEBIAN_FRONTEND=noninteractive
  for _ in $(seq 30); do apt-get update -qq && break; sleep 10; done
  # shellcheck disable=SC2086
  for _ in $(seq 30); do apt-get install -y -qq --no-install-recommends $pkgs >/dev/null && return 0; sleep 10; done
  return 1
}

# slurm.conf lines both test clusters share. Choices that matter here (each one cost hours to find):
# proctrack/linuxproc + task/none (proctrack/cgroup fails at step launch in containers); no cgroup.conf on 22.05;
# cred_expire=5 + sched_interval=2 (else a requeued job waits ~2 min before it runs again); ReturnToService=2 (a
# node whose slurmd comes back after a failure takes jobs again at once).
slurm_conf_common() {
  cat <<'CONF'
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobCompType=jobcomp/none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
CONF
}
