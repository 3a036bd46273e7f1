#!/usr/bin/env python3
"""How long a periodic checkpoint keeps a container frozen (issue 15), for containers
holding 64 MiB and 1 GiB of dirty memory.

A periodic checkpoint is `checkpoint_container` with the container left running (archd's
periodic runner and `archctl container checkpoint --leave-running` take the same path):
freeze, rootfs diff, work directory, CRIU dump, durable commit, thaw. Its frozen time is
the sum of the phases between the freeze and the thaw, as archd's `checkpoint/periodic`
event reports it (container/periodic.cc). This kernel has no soft-dirty tracking, so every
checkpoint is a full dump (no pre-copy). Each size is checkpointed --rounds times while it
keeps running; the workload's counter must move on after every round (it was thawed).
Run as root after scripts/setup.sh:   bench/periodic_frozen.py [--rounds 3] [--sizes 64,1024]
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from harness import (ARCHCTL, ArchEngine, compile_hog, dir_bytes, read_beat, run,  # noqa: E402
                     wait_beat_after)

FROZEN_PHASES = ("rootfs", "workdir", "dump", "commit", "end")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="64,1024", help="MiB of dirty memory, comma-separated")
    ap.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="arch-bench-periodic-")
    engine = None
    rows = []
    try:
        hog = compile_hog(work)
        engine = ArchEngine(os.path.join(work, "arch"), hog)
        engine.start()
        for mib in (int(x) for x in args.sizes.split(",")):
            name = f"periodic-{mib}"
            engine.start_workload(name, mib, touch=True)
            frozen, size = [], []
            for _ in range(args.rounds):
                before = read_beat(engine.out_dir(name))
                out = json.loads(run([ARCHCTL, "container", "checkpoint", f"{engine.NS}/{name}",
                                      "--leave-running", "-o", "json"], env=engine.env).stdout)
                t = out["timings_ms"]
                frozen.append(sum(t.get(p, 0) for p in FROZEN_PHASES) / 1000)
                size.append(dir_bytes(out["checkpoint"]) / (1 << 20))
                wait_beat_after(engine.out_dir(name), before)  # thawed: it counts on
            engine.remove(name)
            engine.forget_checkpoint(name)
            rows.append((mib, statistics.median(frozen), frozen, statistics.median(size)))
            print(f"{mib} MiB: frozen median {statistics.median(frozen):.2f} s, rounds "
                  f"{[round(x, 2) for x in frozen]}", flush=True)
    finally:
        if engine:
            engine.stop()
        shutil.rmtree(work, ignore_errors=True)
    lines = ["| memory | frozen (median) | rounds | checkpoint size |", "|---|---|---|---|"]
    for mib, med, all_rounds, sz in rows:
        lines.append(f"| {mib} MiB | {med:.2f} s | {', '.join(f'{x:.2f}' for x in all_rounds)} "
                     f"| {sz:.0f} MiB |")
    table = "\n".join(lines)
    print(table)
    if not args.no_results:
        benchlib.add_to_results(
            "## Periodic checkpoints: frozen time (bench/periodic_frozen.py)",
            benchlib.run_heading() + "\n\n" + f"`bench/periodic_frozen.py --rounds {args.rounds} --sizes {args.sizes}`: a "
            "container left running after each checkpoint (no pre-copy: this kernel has no "
            "soft-dirty tracking); frozen = rootfs diff + work directory + dump + commit + "
            f"end (thaw).\n\n{table}\n")


if __name__ == "__main__":
    main()
