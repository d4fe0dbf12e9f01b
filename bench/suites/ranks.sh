#!/usr/bin/env bash
# ranks: 32 ranks of one job started at once on one node, until all are
# done: `cairn run --join=TAG img.sqfs -- true` x32 against
# `ch-run --join --join-ct=32 --join-tag=TAG img.sqfs -- true` x32.
# Then 16 and 64 ranks through srun (a private Slurm, tests/slurm/start.sh)
# and host mpirun (the MPI image fixture), against ch-run --join and the
# bare program, and the opens of the image file per launch.
# As the ordinary user (cairn-test) when the suite runs as root.
# Each launch mounts the image afresh, as ch-run's does: warm runs (issue
# 16: a launch entering the mount the previous one left) are off
# (CAIRN_WARM_LINGER=0, passed to the ranks by srun's and mpirun's
# environment); bench/suites/warm.sh measures them.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
export CAIRN_WARM_LINGER=0

user=${CAIRN_BENCH_USER:-cairn-test}
n=${BENCH_RANKS:-32}
root="$work_dir/ranks-rootfs"
bench_busybox_rootfs "$root"
img="$work_dir/ranks.sqfs"
[ -f "$img" ] || mksquashfs "$root" "$img" -noappend -quiet -no-progress >/dev/null
chmod 0644 "$img"
bench_cairn_for_user

bench_as_user "$user"

# One job = n ranks started together; a fresh tag per job (the linger of
# the previous job's supervisor must not be measured as sharing).
script="$work_dir/ranks-job.sh"
cat >"$script" <<SCRIPT
#!/bin/sh
tag=job-\$\$-\$(date +%s%N)
i=0
while [ \$i -lt $n ]; do
    case "\$1" in
    cairn) CAIRN_JOIN_LINGER_MS=200 "$bin" run --join=\$tag "$img" -- true & ;;
    ch-run) ch-run --join --join-ct=$n --join-tag=\$tag "$img" -- true & ;;
    esac
    i=\$((i + 1))
done
wait
SCRIPT
chmod 0755 "$script"
$as "$script" cairn || die "cairn ranks failed"
$as "$script" ch-run || die "ch-run ranks failed"

export BENCH_RUNS=${BENCH_RUNS:-10}
cairn_t=$(hyperfine_median ranks-cairn $as "$script" cairn)
chrun_t=$(hyperfine_median ranks-chrun $as "$script" ch-run)
report ranks "$n ranks --join, all done (vs ch-run --join)" "$cairn_t" ch-run "$chrun_t"

# --- Launchers: srun (a private one-node Slurm) and host mpirun, 16 and 64
# ranks, time from launch until all ranks are done: cairn run --join against
# ch-run --join and the bare program; opens of the image file during one
# 64-rank launch (strace). Needs root (to start Slurm) and the launchers;
# the first run builds the MPI image fixture (several minutes, then cached).
sizes=${BENCH_LAUNCH_RANKS:-16 64}
launch_runs=${BENCH_LAUNCH_RUNS:-5}
if [ "$(id -u)" != 0 ] || [ -z "$as" ]; then
    echo "ranks: srun/mpirun part skipped (needs root and the user $user)" >&2
    exit 0
fi
for tool in srun mpirun mpicc strace; do
    command -v "$tool" >/dev/null || die "$tool missing: run tests/setup-host.sh"
done

# opens_of IMG CMD... :: PROGRAM...: the opens of IMG by the container
# runtimes CMD starts (PROGRAM, e.g. cairn or ch-run, and everything they
# fork), counted with strace around each: inotify would undercount, since
# the kernel merges identical unread events.
opens_of() {
    local file=$1; shift
    local pre=() trace
    while [ "$1" != :: ]; do pre+=("$1"); shift; done
    shift
    trace=$(mktemp -d "$work_dir/opens.XXXXXX")
    chmod 1777 "$trace"
    "${pre[@]}" strace -f -qq -e trace=open,openat -ff -o "$trace/t" "$@" >/dev/null 2>&1 ||
        die "failed: ${pre[*]} $*"
    cat "$trace"/t.* | grep -F "$(basename "$file")\"" | grep -vc ' = -1 ' || true
    rm -rf "$trace"
}

# srun: the ranks image (busybox, with the /etc files ch-run binds over).
slurm_dir="$work_dir/slurm-$$"
"$repo_dir/tests/slurm/start.sh" "$slurm_dir" >/dev/null
trap '"$repo_dir/tests/slurm/stop.sh" "$slurm_dir"; rm -rf "$slurm_dir"' EXIT
export SLURM_CONF=$slurm_dir/slurm.conf
export CAIRN_JOIN_LINGER_MS=200
# ch-run's default join tag under srun is SLURM_STEP_ID, 0 for every job:
# one job that fails leaves its /dev/shm semaphore, and every later job with
# that tag then fails ("join: no PID ..."). So ch-run gets the job id as its
# tag and the task count, through a shell that execs it (about a
# millisecond per rank); cairn's default tag is SLURM_JOB_ID + SLURM_STEP_ID.
chrun_srun="$work_dir/ch-run-srun.sh"
cat >"$chrun_srun" <<'SCRIPT'
#!/bin/sh
exec ch-run --join-ct="$SLURM_STEP_NUM_TASKS" --join-tag="slurm-$SLURM_JOB_ID.$SLURM_STEP_ID" "$@"
SCRIPT
chmod 0755 "$chrun_srun"
# The ranks run `sleep S`, not `true`: ch-run's peers enter the namespaces
# of the first ch-run through /proc/PID/ns, so when that rank has already
# exited ("join: no PID ...: /proc/PID/ns/user not found") the job fails;
# with 64 ranks on 2 cores `true` lost that race about one job in 20. MPI
# ranks do not have the problem (MPI_Init waits for all). The sleep is in
# all three, so the overhead over bare is reported as well.
secs=${BENCH_SRUN_SLEEP:-1}
for n in $sizes; do
    $as srun -n "$n" "$bin" run --join "$img" -- sleep "$secs" || die "srun cairn failed"
    $as srun -n "$n" "$chrun_srun" "$img" -- sleep "$secs" || die "srun ch-run failed"
    export BENCH_RUNS=$launch_runs BENCH_WARMUP=1
    bare_t=$(hyperfine_median "srun$n-bare" $as srun -n "$n" sleep "$secs")
    cairn_t=$(hyperfine_median "srun$n-cairn" $as srun -n "$n" "$bin" run --join "$img" -- sleep "$secs")
    chrun_t=$(hyperfine_median "srun$n-chrun" $as srun -n "$n" "$chrun_srun" "$img" -- sleep "$secs")
    report ranks "srun -n $n sleep $secs, all done (vs ch-run --join)" "$cairn_t" ch-run "$chrun_t"
    report ranks "srun -n $n sleep $secs, all done (vs bare)" "$cairn_t" bare "$bare_t"
    cairn_o=$(python3 -c 'import sys; print(float(sys.argv[1]) - float(sys.argv[2]))' "$cairn_t" "$bare_t")
    chrun_o=$(python3 -c 'import sys; print(float(sys.argv[1]) - float(sys.argv[2]))' "$chrun_t" "$bare_t")
    report ranks "srun -n $n, overhead over bare (vs ch-run)" "$cairn_o" ch-run "$chrun_o"
done
n_max=${sizes##* }
cairn_opens=$(opens_of "$img" $as srun -n "$n_max" :: "$bin" run --join "$img" -- sleep "$secs")
chrun_opens=$(opens_of "$img" $as srun -n "$n_max" :: "$chrun_srun" "$img" -- sleep "$secs")
report ranks "srun -n $n_max, opens of the image file" "$cairn_opens" ch-run "$chrun_opens" " opens"

# mpirun: the MPI image fixture's ring (ring + allreduce + CMA check); the
# bare case is the same ring.c built on the host with the host's mpicc
# (same OpenMPI 4.1.4 as in the image).
mpi_img=$("$repo_dir/tests/fixtures/mpi-image.sh" "${CAIRN_FIXTURES:-/var/tmp/cairn-fixtures}" "$bin")
ring="$work_dir/ring-host"
mpicc -O2 -o "$ring" "$repo_dir/tests/fixtures/mpi/ring.c"
chmod 0755 "$ring"
# ch-run's default tag under mpirun is its parent's pid, which strace (for
# the count of opens) would make different per rank: the same wrapper idea
# as for srun, with the PMIx namespace as the tag.
chrun_mpi="$work_dir/ch-run-mpi.sh"
cat >"$chrun_mpi" <<'SCRIPT'
#!/bin/sh
exec ch-run --join-ct="$OMPI_COMM_WORLD_LOCAL_SIZE" --join-tag="ompi-$PMIX_NAMESPACE" "$@"
SCRIPT
chmod 0755 "$chrun_mpi"
mpirun_=(mpirun --oversubscribe --mca btl self,vader --mca btl_vader_single_copy_mechanism cma
         -x CAIRN_JOIN_LINGER_MS=200 -x CAIRN_WARM_LINGER=0)
for n in $sizes; do
    $as "${mpirun_[@]}" -np "$n" "$bin" run --join "$mpi_img" -- /opt/ring >/dev/null || die "mpirun cairn failed"
    $as "${mpirun_[@]}" -np "$n" "$chrun_mpi" "$mpi_img" -- /opt/ring >/dev/null || die "mpirun ch-run failed"
    bare_t=$(hyperfine_median "mpirun$n-bare" $as "${mpirun_[@]}" -np "$n" "$ring")
    cairn_t=$(hyperfine_median "mpirun$n-cairn" $as "${mpirun_[@]}" -np "$n" "$bin" run --join "$mpi_img" -- /opt/ring)
    chrun_t=$(hyperfine_median "mpirun$n-chrun" $as "${mpirun_[@]}" -np "$n" "$chrun_mpi" "$mpi_img" -- /opt/ring)
    report ranks "mpirun -np $n ring, all done (vs ch-run --join)" "$cairn_t" ch-run "$chrun_t"
    report ranks "mpirun -np $n ring, all done (vs bare ring)" "$cairn_t" bare "$bare_t"
    cairn_o=$(python3 -c 'import sys; print(float(sys.argv[1]) - float(sys.argv[2]))' "$cairn_t" "$bare_t")
    chrun_o=$(python3 -c 'import sys; print(float(sys.argv[1]) - float(sys.argv[2]))' "$chrun_t" "$bare_t")
    report ranks "mpirun -np $n, overhead over bare (vs ch-run)" "$cairn_o" ch-run "$chrun_o"
done
cairn_opens=$(opens_of "$mpi_img" $as "${mpirun_[@]}" -np "$n_max" :: "$bin" run --join "$mpi_img" -- /opt/ring)
chrun_opens=$(opens_of "$mpi_img" $as "${mpirun_[@]}" -np "$n_max" :: "$chrun_mpi" "$mpi_img" -- /opt/ring)
report ranks "mpirun -np $n_max, opens of the image file" "$cairn_opens" ch-run "$chrun_opens" " opens"
