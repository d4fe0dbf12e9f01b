#!/usr/bin/env bash
# Stop the Slurm that tests/slurm/start.sh DIR started: its daemons by their
# pid files (never by name: other Slurms may run on this machine). Idempotent.
set -uo pipefail
dir=${1:?usage: stop.sh DIR}
# Jobs first: their slurmstepd processes outlive slurmd otherwise.
if [ -f "$dir/slurm.conf" ] && [ -s "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
    export SLURM_CONF=$dir/slurm.conf
    jobs=$(squeue -h -o %A 2>/dev/null)
    if [ -n "$jobs" ]; then
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null
        for _ in $(seq 1 100); do
            [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
fi
pids=()
for f in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [ -s "$f" ] && pids+=("$(cat "$f")")
done
# Gone, or a zombie that whoever adopted the daemon has yet to reap.
gone() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
    [ -z "$state" ] || [ "$state" = Z ]
}
for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
for _ in $(seq 1 50); do
    alive=0
    for pid in "${pids[@]}"; do gone "$pid" || alive=1; done
    [ $alive = 0 ] && exit 0
    sleep 0.1
done
for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
exit 0
