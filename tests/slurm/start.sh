#!/usr/bin/env bash
# Start a private one-node Slurm on localhost (munged + slurmctld + slurmd),
# for tests/cluster_slurm.rs and bench/suites/ranks.sh. Run as root.
#
#   tests/slurm/start.sh DIR      prints SLURM_CONF=DIR/slurm.conf when ready
#   tests/slurm/stop.sh DIR       kills the daemons (by their pid files)
#
# Everything lives in DIR (made 0755 so the ordinary test user can reach the
# munge socket and slurm.conf): the munge key, socket, pid and log files, the
# generated slurm.conf, the controller's state and slurmd's spool. Ports are
# picked free. The node claims 64 CPUs (SlurmdParameters=config_overrides) so
# 64 tasks fit on a 2-core machine; proctrack/linuxproc and task/none so no
# cgroup setup is needed.
set -euo pipefail

dir=${1:?usage: start.sh DIR}
[ "$(id -u)" = 0 ] || { echo "slurm/start.sh: must run as root" >&2; exit 1; }
for tool in munged mungekey slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || { echo "slurm/start.sh: $tool missing (tests/setup-host.sh)" >&2; exit 1; }
done
mkdir -p "$dir"/{munge,state,spool}
chmod 0755 "$dir" "$dir/munge"
dir=$(cd "$dir" && pwd)

# munge: its own key and socket; the key must be 0600 and owned by the daemon.
mungekey --create --keyfile="$dir/munge/munge.key" --force 2>/dev/null ||
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 0600 "$dir/munge/munge.key"
# --force: munged refuses to run as root, or with its files outside the
# standard places (not owned by the munge user), without it.
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.sock" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed" --num-threads=4

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
ctld_port=$(free_port)
slurmd_port=$(free_port)
while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done
node=cairn-node

: >"$dir/plugstack.conf"
cat >"$dir/cgroup.conf" <<CONF
CgroupPlugin=autodetect
CgroupMountpoint=/sys/fs/cgroup
CONF
cat >"$dir/slurm.conf" <<CONF
ClusterName=cairntest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.sock
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$dir/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=30
InactiveLimit=0
SlurmdTimeout=60
SlurmctldTimeout=60
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=64 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
chmod 0644 "$dir/slurm.conf" "$dir/plugstack.conf" "$dir/cgroup.conf"
export SLURM_CONF=$dir/slurm.conf

slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF" -N "$node"

# Ready when the node is idle (slurmd registered with the controller).
for _ in $(seq 1 150); do
    state=$(sinfo -h -n "$node" -o %T 2>/dev/null || true)
    if [ "$state" = idle ]; then
        echo "SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.2
done
echo "slurm/start.sh: node $node not idle after 30s (state '${state:-}')" >&2
tail -20 "$dir/slurmctld.log" "$dir/slurmd.log" "$dir/munge/munged.log" >&2 || true
exit 1
