#!/usr/bin/env python3
# bench/interleave.py ROUNDS WARMUP NAME=COMMAND...
#
# Wall time of short commands, in interleaved rounds: each round runs every
# command once, in a random order, so the drift of a shared machine (a
# neighbour's job starting, the host's frequency) hits all of them alike.
# `hyperfine` runs one command's repetitions back to back; on this
# project's noisy 2-core machines that moved the ratio of two commands
# measured one after the other by 10-30% between runs of the same binaries.
#
# A COMMAND is split as a shell would split it (shlex) and spawned
# directly, without a shell, as `hyperfine -N` does; its output is
# discarded and a failure stops the benchmark. With INTERLEAVE_PREPARE
# set, that shell command runs before each timed one, untimed (e.g.
# removing the output a command made). The first WARMUP rounds are
# not counted. Prints, per command, "NAME<TAB>median seconds<TAB>min
# seconds<TAB>median of the per-round ratio to the first command".
import os, random, shlex, statistics, sys, time


def spawn_and_wait(argv, devnull):
    t0 = time.perf_counter_ns()
    pid = os.posix_spawnp(argv[0], argv, os.environ,
                          file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1)])
    _, status = os.waitpid(pid, 0)
    elapsed = (time.perf_counter_ns() - t0) / 1e9
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"interleave: {shlex.join(argv)} failed ({os.waitstatus_to_exitcode(status)})")
    return elapsed


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__ or "usage: interleave.py ROUNDS WARMUP NAME=COMMAND...")
    rounds, warmup = int(sys.argv[1]), int(sys.argv[2])
    commands = {}
    for spec in sys.argv[3:]:
        name, _, command = spec.partition("=")
        if not name or not command:
            sys.exit(f"interleave: {spec!r} is not NAME=COMMAND")
        commands[name] = shlex.split(command)
    times = {name: [] for name in commands}
    devnull = os.open(os.devnull, os.O_WRONLY)
    prepare = os.environ.get("INTERLEAVE_PREPARE")
    for r in range(warmup + rounds):
        order = list(commands)
        random.shuffle(order)
        for name in order:
            if prepare:
                spawn_and_wait(["sh", "-c", prepare], devnull)
            t = spawn_and_wait(commands[name], devnull)
            if r >= warmup:
                times[name].append(t)
    first = next(iter(commands))
    for name, ts in times.items():
        ratio = statistics.median(a / b for a, b in zip(ts, times[first]))
        print(f"{name}\t{statistics.median(ts):.6f}\t{min(ts):.6f}\t{ratio:.4f}")


if __name__ == "__main__":
    main()
