#!/usr/bin/env bash
# Start a SLURM cluster on this machine (as root), for the tests marked `slurm`.
#   .ci/start_slurm.sh [--nodes N] [STATE_DIR]      (default: 1 node, state in /tmp/visionlab-slurm)
# Installs the Debian packages when missing, writes a slurm.conf with this host's CPUs and memory,
# keeps state, spool and logs under STATE_DIR, and links /etc/slurm/slurm.conf to it so that
# sbatch, squeue and scontrol find the cluster.
#
# One node is this host under its own name. N > 1 nodes use Slurm's multiple-slurmd mode (built
# into Debian's slurmd: `slurmd -N <node>`): one slurmd per node, each with its own node name
# (vl-node1, vl-node2, ...), port, spool directory and log, all on this host, each node offering
# all of its CPUs; the node names are added to /etc/hosts (this host's loopback) so that a job
# can reach its first node by name, as Lightning's SLURM environment does to find the DDP master.
# Idempotent: a running cluster with N nodes is left alone; one with another node count is shut
# down (scontrol shutdown) and started again with N.
set -euo pipefail
nodes=1
if [[ "${1:-}" == --nodes ]]; then nodes="$2"; shift 2; fi
dir="${1:-/tmp/visionlab-slurm}"
[[ "$nodes" =~ ^[1-9][0-9]*$ ]] || { echo "--nodes takes a count (1, 2, ...), not '$nodes'" >&2; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

idle_nodes() { sinfo -h -N -t idle -o %N 2>/dev/null | sort -u | wc -l; }
# (without a slurm.conf, sinfo retries for a minute before it gives up)
if [[ -e /etc/slurm/slurm.conf ]] && timeout 15 sinfo -h >/dev/null 2>&1; then
    running="$(sinfo -h -N -o '%N %t' | sort -u)"
    if [[ "$(wc -l <<< "$running")" == "$nodes" ]] && ! grep -Eq '\*|down|drain|fail' <<< "$running"; then
        echo "slurm: already running with $nodes node(s)"; exit 0
    fi
    echo "slurm: restarting the running cluster (another node count, or nodes not responding)"
    scontrol shutdown >/dev/null 2>&1 || true
    for _ in $(seq 60); do pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break; sleep 0.5; done
fi

host="$(hostname -s)"
read -r cpus mem < <(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*RealMemory=\([0-9]*\).*/\1 \2/p')
mkdir -p "$dir"/{state,spool,log} /etc/slurm /run/munge /var/log/munge /var/lib/munge
[[ -s /etc/munge/munge.key ]] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || munged --force

if (( nodes == 1 )); then
    names=("$host")
    node_lines="NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN"
    node_list="$host"
else
    names=()
    node_lines=""
    for i in $(seq "$nodes"); do
        names+=("vl-node$i")
        node_lines+="NodeName=vl-node$i NodeHostname=$host Port=$((17000 + i)) CPUs=$cpus RealMemory=$mem State=UNKNOWN"$'\n'
        grep -qw "vl-node$i" /etc/hosts || echo "127.0.0.1 vl-node$i" >> /etc/hosts
    done
    node_list="vl-node[1-$nodes]"
fi

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
EnforcePartLimits=ALL   # refuse at sbatch what no node could run, as production sites do
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
$node_lines
PartitionName=debug Nodes=$node_list Default=YES MaxTime=INFINITE State=UP
CONF
ln -sf "$dir/slurm.conf" /etc/slurm/slurm.conf

slurmctld -c    # -c: a clean state, no jobs left from an earlier cluster
if (( nodes == 1 )); then
    slurmd
else
    for name in "${names[@]}"; do slurmd -N "$name"; done
fi
for _ in $(seq 60); do
    if (( $(idle_nodes) == nodes )); then
        echo "slurm: ${names[*]} up, $cpus CPUs per node (state in $dir)"; exit 0
    fi
    sleep 0.5
done
echo "slurm did not come up; see $dir/log" >&2
exit 1
