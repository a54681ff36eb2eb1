#!/usr/bin/env bash
# Install and start a single-node SLURM on this machine (Debian, as root), so that the tests
# marked `slurm` run `sweep.py --executor slurm` through a real scheduler. Idempotent: it starts
# only what is not running, and leaves a cluster it did not set up alone. One partition, `debug`,
# with every CPU of this machine and no GPUs; no cgroups and no CPU binding
# (ProctrackType=proctrack/linuxproc, TaskPlugin=task/none), like the small clusters where jobs
# share a node's cores by count alone.
set -euo pipefail

conf=/etc/slurm/slurm.conf

# Up: the controller answers and a node can take jobs.
up() {
    scontrol ping 2>/dev/null | grep -q UP \
        && sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'
}

if up && ! grep -qx 'ClusterName=ci' "$conf" 2>/dev/null; then
    echo "slurm: a cluster that this script did not set up answers; leaving it alone"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "slurm: starting a cluster needs root" >&2
    exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge
fi

host=$(hostname -s)
cpus=$(nproc)
memory_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
state=/var/spool/slurm-ci
mkdir -p /etc/slurm /var/log/slurm "$state/ctld" "$state/d" /run/munge

# munge: one key, the daemon running as its own user.
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
fi

# KillWait: a job told to stop (scancel, scontrol requeue) is killed 2 s later, not 30;
# cred_expire: a requeued job may start again 10 s later, not 120; bf_interval: and the
# scheduler looks for it every 5 s, not 30.
cat >"$conf.new" <<EOF
ClusterName=ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
KillWait=2
AuthInfo=cred_expire=10
SchedulerParameters=bf_interval=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

if cmp -s "$conf.new" "$conf"; then
    rm "$conf.new"
else
    mv "$conf.new" "$conf"
    if pgrep -x slurmctld >/dev/null; then scontrol reconfigure; fi
fi
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 60); do
    if up; then
        echo "slurm: running on $host with $cpus CPUs (partition debug)"
        exit 0
    fi
    sleep 1
done
echo "slurm: the node did not come up; see /var/log/slurm/" >&2
exit 1
