#!/usr/bin/env python3
"""The two tables of "Checkpoint and Restoration of Micro-service in Docker Containers"
(C. Yang), reproduced with ARCH, runc alone and Podman side by side in the same run:

  Table 1  checkpoint time to file and restore time of containers holding 56, 118 and
           256 MiB of written memory.
  Table 2  checkpoint time of containers holding 1 MiB to 1 GiB of memory, "untouched"
           (mapped, never written: no page to save) and "changed" (every page written).

The paper's own figures (an 8 GB, 2 GHz Xeon E5-2620 machine) are printed beside ours
where the issue quotes them: 256 MB took 2183 ms to checkpoint to file and 1998 ms to
restore; 1 GB changed took 9312 ms to checkpoint. The workload is harness.HOG_C; each
engine's checkpoint goes to files (ARCH: its store, fsync'd; runc: an image directory;
Podman: an --export archive), its restore is create-to-running (see harness.py).

Run as root after scripts/setup.sh:  bench/paper.py [--rounds 3] [--quick]
Prints Markdown; --json FILE keeps the raw figures; --plot-dir DIR writes PNGs.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

TABLE1_MIB = (56, 118, 256)
TABLE2_MIB = (1, 4, 16, 64, 256, 1024)
QUICK_TABLE2_MIB = (1, 16, 256)
# The paper's figures quoted in the issue (ms); the others are not quoted, so not shown.
PAPER_T1 = {256: (2183, 1998)}
PAPER_T2 = {(1024, "changed"): 9312}


def table1(engine, sizes, rounds, log):
    out = {}
    for mib in sizes:
        ckpt, rest = [], []
        for r in range(rounds):
            name = f"t1-{mib}"
            engine.start_workload(name, mib, True)
            ckpt.append(engine.checkpoint(name))
            running, _ = engine.restore(name)
            rest.append(running)
            engine.remove(name)
            engine.forget_checkpoint(name)
            log(f"{engine.label} table 1 {mib} MiB round {r + 1}: checkpoint {ckpt[-1]:.3f} s, "
                f"restore {rest[-1]:.3f} s")
        out[mib] = {"checkpoint": ckpt, "restore": rest}
    return out


def table2(engine, sizes, rounds, log):
    out = {}
    for mib in sizes:
        for kind in ("untouched", "changed"):
            times, size = [], 0
            for r in range(rounds):
                name = f"t2-{mib}-{kind}"
                engine.start_workload(name, mib, kind == "changed")
                times.append(engine.checkpoint(name))
                size = harness.dir_bytes(engine.checkpoint_path(name))
                engine.forget_checkpoint(name)
                log(f"{engine.label} table 2 {mib} MiB {kind} round {r + 1}: {times[-1]:.3f} s")
            out[f"{mib} {kind}"] = {"checkpoint": times, "bytes": size}
    return out


def ms(seconds):
    return "" if seconds is None else f"{seconds * 1000:.0f} ms"


def print_table1(results, sizes):
    engines = list(results)
    print("#### Table 1: checkpoint to file and restore (medians)\n")
    head = " | ".join(f"{e} checkpoint | {e} restore" for e in engines)
    print(f"| memory | {head} | paper checkpoint | paper restore |")
    print("|---" * (1 + 2 * len(engines) + 2) + "|")
    for mib in sizes:
        cells = []
        for e in engines:
            row = results[e]["table1"][mib]
            cells += [ms(harness.median(row["checkpoint"])), ms(harness.median(row["restore"]))]
        paper = PAPER_T1.get(mib)
        ref = [f"{paper[0]} ms", f"{paper[1]} ms"] if paper else ["not quoted", "not quoted"]
        print(f"| {mib} MiB | {' | '.join(cells)} | {' | '.join(ref)} |")
    print()
    arch = engines[0]
    for e in engines[1:]:
        ratios = []
        for mib in sizes:
            a, o = results[arch]["table1"][mib], results[e]["table1"][mib]
            ratios.append(f"{mib} MiB {harness.median(o['checkpoint']) / harness.median(a['checkpoint']):.2f}x"
                          f" / {harness.median(o['restore']) / harness.median(a['restore']):.2f}x")
        print(f"- {e} vs {arch} (checkpoint / restore time ratio): {', '.join(ratios)}")
    print()


def print_table2(results, sizes):
    engines = list(results)
    print("#### Table 2: checkpoint time by memory size, untouched and changed (medians)\n")
    head = " | ".join(f"{e} untouched | {e} changed" for e in engines)
    print(f"| memory | {head} | paper changed | checkpoint size (ARCH, changed) |")
    print("|---" * (1 + 2 * len(engines) + 2) + "|")
    for mib in sizes:
        cells = []
        for e in engines:
            for kind in ("untouched", "changed"):
                cells.append(ms(harness.median(results[e]["table2"][f"{mib} {kind}"]["checkpoint"])))
        paper = PAPER_T2.get((mib, "changed"))
        size = results[engines[0]]["table2"][f"{mib} changed"]["bytes"] / (1 << 20)
        print(f"| {mib} MiB | {' | '.join(cells)} | {f'{paper} ms' if paper else 'not quoted'} | "
              f"{size:.0f} MiB |")
    print()


def plots(results, t1_sizes, t2_sizes, plot_dir):
    os.makedirs(plot_dir, exist_ok=True)
    engines = list(results)
    # Table 2: checkpoint time against memory, one line per engine and kind.
    data = os.path.join(plot_dir, "paper_table2.dat")
    with open(data, "w") as f:
        for e in engines:
            for kind in ("changed", "untouched"):
                f.write(f"# {e} {kind}\n")
                for mib in t2_sizes:
                    t = harness.median(results[e]["table2"][f"{mib} {kind}"]["checkpoint"])
                    f.write(f"{mib} {t * 1000:.1f}\n")
                f.write("\n\n")
    curves, index = [], 0
    for e in engines:
        for kind in ("changed", "untouched"):
            dash = "dt 1" if kind == "changed" else "dt 2"
            curves.append(f'"{data}" index {index} using 1:2 with linespoints {dash} '
                          f'title "{e}, {kind}"')
            index += 1
    curves.append('"-" using 1:2 with points pt 7 ps 1.5 title "paper, changed (E5-2620)"')
    harness.gnuplot(f"""
set terminal pngcairo size 1000,600 font ",10"
set output "{os.path.join(plot_dir, 'paper_table2.png')}"
set title "Checkpoint time by memory size (paper table 2)"
set logscale x 2
set logscale y 10
set xlabel "memory (MiB)"
set ylabel "checkpoint time (ms, median)"
set key top left
plot {", ".join(curves)}
1024 9312
e
""")
    os.unlink(data)
    # Table 1: checkpoint and restore per size and engine.
    data = os.path.join(plot_dir, "paper_table1.dat")
    with open(data, "w") as f:
        for mib in t1_sizes:
            vals = []
            for e in engines:
                row = results[e]["table1"][mib]
                vals += [harness.median(row["checkpoint"]) * 1000,
                         harness.median(row["restore"]) * 1000]
            paper = PAPER_T1.get(mib, ("NaN", "NaN"))
            f.write(f"\"{mib} MiB\" " + " ".join(f"{v:.1f}" for v in vals) +
                    f" {paper[0]} {paper[1]}\n")
    cols, n = [], 2
    for e in engines:
        cols.append(f'"{data}" using {n}:xtic(1) title "{e} checkpoint"')
        cols.append(f'"" using {n + 1} title "{e} restore"')
        n += 2
    cols.append(f'"" using {n} title "paper checkpoint"')
    cols.append(f'"" using {n + 1} title "paper restore"')
    harness.gnuplot(f"""
set terminal pngcairo size 1100,600 font ",10"
set output "{os.path.join(plot_dir, 'paper_table1.png')}"
set title "Checkpoint to file and restore (paper table 1)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel "ms (median)"
set key top left
plot {", ".join(cols)}
""")
    os.unlink(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="one round, table 2 at 1, 16 and 256 MiB only")
    parser.add_argument("--no-podman", action="store_true")
    parser.add_argument("--json", help="write the raw figures here")
    parser.add_argument("--plot-dir", help="write paper_table1.png and paper_table2.png here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    rounds = 1 if args.quick else args.rounds
    t2_sizes = QUICK_TABLE2_MIB if args.quick else TABLE2_MIB
    workdir = tempfile.mkdtemp(prefix="arch-bench-paper-")
    os.chmod(workdir, 0o755)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    results = {}
    try:
        machine = harness.machine_description(workdir)
        hog = harness.compile_hog(workdir)
        for engine in harness.engines(workdir, hog, with_podman=not args.no_podman):
            engine.start()
            try:
                results[engine.label] = {"table1": table1(engine, TABLE1_MIB, rounds, log),
                                         "table2": table2(engine, t2_sizes, rounds, log)}
            finally:
                engine.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = open("/proc/loadavg").read().split()[:3]
    quick = " --quick" if args.quick else f" --rounds {rounds}"
    print(f"### The paper's tables (bench/paper.py{quick})\n")
    print(f"Machine: {harness.describe(machine)}; load after: {' '.join(load_after)}\n")
    print_table1(results, TABLE1_MIB)
    print_table2(results, t2_sizes)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "rounds": rounds, "results": results}, f, indent=1,
                      default=str)
    if args.plot_dir:
        plots(results, TABLE1_MIB, t2_sizes, args.plot_dir)


if __name__ == "__main__":
    main()
