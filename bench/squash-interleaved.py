#!/usr/bin/env python3
# bench/squash-interleaved.py TREE ROUNDS NAME=CAIRN[+flag...] ...
#
# An A/B of cairn binaries against mksquashfs (zstd 3, 128 KiB blocks) on one
# tree, in interleaved rounds: each round runs every command once, in a
# random order, so the drift of a shared machine hits all of them alike; the
# ratio is taken per round, then its median. `bench/run squash` times each
# command's runs back to back, which on this project's noisy 2-core
# machines moved its ratios by 30% between runs of the same binaries.
# Example: bench/squash-interleaved.py /var/tmp/tree 30 new=target/release/cairn \
#     old=/tmp/cairn-old new_sync=target/release/cairn+sync
# The first two rounds are warm-up and not counted. With INTERLEAVED_TSV
# set, each command's figures also go to that file as tab-separated
# "name wall_median_s cpu_median_s per_round_ratio cpu_ratio" lines (how
# bench/suites/squash.sh reads them).
import os, sys, time, random, subprocess, statistics as st, resource, tempfile, shutil
tree, runs = sys.argv[1], int(sys.argv[2])
# Outputs in a private directory (mode 0700), never at a fixed /tmp path
# another user could have planted.
out_dir = tempfile.mkdtemp(prefix="squash-interleaved.")
cmds = {"mksquashfs": ["mksquashfs", tree, f"{out_dir}/mk.sqfs", "-comp", "zstd", "-Xcompression-level", "3", "-b", "131072", "-quiet", "-no-progress"]}
for a in sys.argv[3:]:
    n, b = a.split("=", 1)
    extra = []
    if "+" in b:
        b, *extra = b.split("+")
        extra = ["--" + e for e in extra]
    cmds[n] = [b, "squash"] + extra + [tree, f"{out_dir}/{n}.sqfs"]
wall = {n: [] for n in cmds}; cpu = {n: [] for n in cmds}
for r in range(runs + 2):
    order = list(cmds); random.shuffle(order)
    for n in order:
        out = cmds[n][-1] if n != "mksquashfs" else f"{out_dir}/mk.sqfs"
        try: os.unlink(out)
        except FileNotFoundError: pass
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(cmds[n], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dt = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if r >= 2:
            wall[n].append(dt); cpu[n].append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
shutil.rmtree(out_dir)
mk = wall["mksquashfs"]
for n in cmds:
    ratios = [m / w for m, w in zip(mk, wall[n])]
    if os.environ.get("INTERLEAVED_TSV"):
        with open(os.environ["INTERLEAVED_TSV"], "a") as f:
            f.write(f"{n}\t{st.median(wall[n]):.4f}\t{st.median(cpu[n]):.4f}\t{st.median(ratios):.3f}\t{st.median(cpu['mksquashfs'])/st.median(cpu[n]):.3f}\n")
    print(f"{n:12s} wall median {st.median(wall[n])*1000:7.1f} ms min {min(wall[n])*1000:7.1f}  cpu median {st.median(cpu[n])*1000:7.1f} ms   mksquashfs/this per-round median {st.median(ratios):.2f}x  cpu ratio {st.median(cpu['mksquashfs'])/st.median(cpu[n]):.2f}x")
