#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine (as root), for the tests marked `slurm`.
#   .ci/start_slurm.sh [STATE_DIR]      (default: /tmp/visionlab-slurm)
# Installs the Debian packages when missing, writes a slurm.conf naming this host with its CPUs,
# keeps state, spool and logs under STATE_DIR, and links /etc/slurm/slurm.conf to it so that
# sbatch, squeue and scontrol find the cluster. Idempotent: a running cluster is left alone.
set -euo pipefail
dir="${1:-/tmp/visionlab-slurm}"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
if sinfo -h -o %t 2>/dev/null | grep -q idle; then
    echo "slurm: already running"; exit 0
fi

host="$(hostname -s)"
read -r cpus mem < <(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*RealMemory=\([0-9]*\).*/\1 \2/p')
mkdir -p "$dir"/{state,spool,log} /etc/slurm /run/munge /var/log/munge /var/lib/munge
[[ -s /etc/munge/munge.key ]] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || munged --force

cat > "$dir/slurm.conf" <<CONF
ClusterName=visionlab
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2   # a test cluster: start jobs at once
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
ln -sf "$dir/slurm.conf" /etc/slurm/slurm.conf

slurmctld -c    # -c: a clean state, no jobs left from an earlier cluster
slurmd
for _ in $(seq 60); do
    if sinfo -h -o %t 2>/dev/null | grep -q idle; then
        echo "slurm: $host with $cpus CPUs is up (state in $dir)"; exit 0
    fi
    sleep 0.5
done
echo "slurm did not come up; see $dir/log" >&2
exit 1
