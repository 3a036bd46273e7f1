#!/usr/bin/env python3
"""Restore latency: create-to-running of a restored container holding MIB MiB of written
memory (default 1024), against a fresh start of the same image, with and without lazy
pages, for ARCH, runc alone and Podman in the same run.

For each engine the workload is started (timed: the fresh start), checkpointed once, then
restored --rounds times in each variant, the variants interleaved round by round:
  plain, warm   the checkpoint's files in the page cache (restore right where it was written)
  lazy,  warm   CRIU lazy pages (ARCH: ARCH_LAZY_RESTORE=1; runc: --lazy-pages + daemon)
  plain, cold   the checkpoint's files evicted from the page cache first (posix_fadvise
                DONTNEED on those files only), as on a node that did not write them
  lazy,  cold
ARCH's lazy rows serve the pages through its page server, each chunk checked against the
seal as served; "lazy, verify first" hashes every file before the restore instead
(ARCH_LAZY_VERIFY=first, how ARCH's lazy restore worked before).
Columns: create-to-running (the engine's command returns with the task running), inside
arch-runc (ARCH's own figure: verify, rootfs diff, runc restore), CRIU restore (CRIU's own
duration from its restore.log), first progress (the workload's counter moves past its
checkpointed value), and for lazy rows all-pages-in (the lazy-pages daemon has served
every page and ended). ARCH also reports how long verifying the checkpoint takes.

Run as root after scripts/setup.sh:  bench/restore_latency.py [--mib 1024] [--rounds 3]
Prints a Markdown section; --json FILE keeps the raw figures; --plot PNG draws them.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from archtest import proc  # noqa: E402

VARIANTS = (("plain", False, False), ("lazy", True, False),
            ("lazy, verify first", "first", False), ("plain, cold", False, True),
            ("lazy, cold", True, True), ("lazy, verify first, cold", "first", True))


def measure(engine, mib, rounds, log):
    name = f"lat{mib}"
    rows = {}
    running, ready = engine.start_workload(name, mib, True)
    rows["fresh start"] = {"running": [running], "progress": [ready]}
    log(f"{engine.label}: fresh start {running:.3f} s, memory written after {ready:.3f} s")
    ckpt = engine.checkpoint(name)
    rows["checkpoint"] = {"seconds": [ckpt],
                          "bytes": harness.dir_bytes(engine.checkpoint_path(name))}
    log(f"{engine.label}: checkpoint {ckpt:.3f} s")
    if isinstance(engine, harness.ArchEngine):
        # What every ARCH restore does first: SHA-256 of every file of the checkpoint.
        rows["verify"] = {"warm": engine.verify_seconds(name, cold=False),
                          "cold": engine.verify_seconds(name, cold=True)}
        log(f"{engine.label}: verify warm {rows['verify']['warm']:.3f} s, "
            f"cold {rows['verify']['cold']:.3f} s")
    variants = [v for v in VARIANTS if not (v[1] and isinstance(engine, harness.PodmanEngine))
                and not (v[1] == "first" and not isinstance(engine, harness.ArchEngine))]
    for r in range(rounds):
        for label, lazy, cold in variants:
            if cold:
                harness.evict(engine.checkpoint_path(name))
            start = time.perf_counter()
            running, progress = engine.restore(name, lazy=lazy)
            row = rows.setdefault(label, {"running": [], "progress": [], "all_in": [],
                                          "inner": []})
            row["running"].append(running)
            row["progress"].append(progress)
            if getattr(engine, "last_inner", None) is not None:
                row["inner"].append(engine.last_inner)
            if getattr(engine, "last_criu", None) is not None:
                row.setdefault("criu", []).append(engine.last_criu)
            if lazy:
                proc.wait_until(lambda: engine.lazy_done(name), 600, "lazy pages all in",
                                interval=0.005)
                row["all_in"].append(time.perf_counter() - start)
            log(f"{engine.label} round {r + 1} {label}: running {running:.3f} s, "
                f"progress {progress:.3f} s")
            engine.remove(name)
    engine.forget_checkpoint(name)
    return rows


def fmt(seconds):
    return "" if seconds is None else f"{seconds:.3f} s"


def table(results, mib):
    lines = [f"Create-to-running of a container holding {mib} MiB of written memory (medians).",
             "", "| engine | variant | create-to-running | inside arch-runc | CRIU restore | "
             "first progress | all pages in | running vs plain | running vs fresh start |",
             "|---|---|---|---|---|---|---|---|---|"]
    for engine, rows in results.items():
        fresh = harness.median(rows["fresh start"]["running"])
        for variant in ("fresh start",) + tuple(v[0] for v in VARIANTS):
            if variant not in rows:
                continue
            row = rows[variant]
            running = harness.median(row["running"])
            plain_key = "plain, cold" if "cold" in variant else "plain"
            plain = harness.median(rows[plain_key]["running"]) if plain_key in rows else None
            vs_plain = f"{running / plain:.2f}x" if "lazy" in variant and plain else ""
            vs_fresh = f"{running / fresh:.2f}x" if variant != "fresh start" else "1.00x"
            progress = harness.median(row["progress"])
            all_in = harness.median(row.get("all_in", []))
            note = " (memory written)" if variant == "fresh start" else ""
            inner = harness.median(row.get("inner", []))
            criu = harness.median(row.get("criu", []))
            lines.append(f"| {engine} | {variant} | {fmt(running)} | {fmt(inner)} | {fmt(criu)} | "
                         f"{fmt(progress)}{note} | {fmt(all_in)} | {vs_plain} | {vs_fresh} |")
    lines.append("")
    for engine, rows in results.items():
        c = rows["checkpoint"]
        # Podman's is its gzip'd export archive: the workload's memory compresses well.
        what = " (the export archive, gzip'd)" if "odman" in engine else ""
        lines.append(f"- {engine}: checkpoint {fmt(c['seconds'][0])}, "
                     f"{c['bytes'] / (1 << 20):.1f} MiB on disk{what}.")
        if "verify" in rows:
            v = rows["verify"]
            lines.append(f"- {engine}: verifying the checkpoint (SHA-256 of every file, which "
                         f"every ARCH restore does before runc restore): {fmt(v['warm'])} warm, "
                         f"{fmt(v['cold'])} cold (medians of 3 `archctl checkpoint list --verify`, "
                         f"minus the same without --verify).")
    return "\n".join(lines)


def plot(results, mib, png):
    data = png[:-4] + ".dat"
    with open(data, "w") as f:
        f.write("# engine/variant running progress\n")
        for engine, rows in results.items():
            for variant in ("fresh start",) + tuple(v[0] for v in VARIANTS):
                if variant in rows:
                    f.write(f"\"{engine}\\n{variant}\" "
                            f"{harness.median(rows[variant]['running']):.4f} "
                            f"{harness.median(rows[variant]['progress']):.4f}\n")
    harness.gnuplot(f"""
set terminal pngcairo size 1200,600 font ",10"
set output "{png}"
set title "Restore of a container holding {mib} MiB: create-to-running and first progress"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel "seconds (median)"
set xtics rotate by -35 scale 0
set key top left
plot "{data}" using 2:xtic(1) title "create-to-running", '' using 3 title "first progress"
""")
    os.unlink(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-podman", action="store_true")
    parser.add_argument("--arch-only", action="store_true", help="ARCH's rows alone")
    parser.add_argument("--json", help="write the raw figures here")
    parser.add_argument("--plot", help="write a PNG bar chart here (needs gnuplot)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    workdir = tempfile.mkdtemp(prefix="arch-bench-latency-")
    os.chmod(workdir, 0o755)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    results, machine = {}, None
    try:
        machine = harness.machine_description(workdir)
        hog = harness.compile_hog(workdir)
        for engine in harness.engines(workdir, hog, with_podman=not args.no_podman):
            if args.arch_only and not isinstance(engine, harness.ArchEngine):
                continue
            engine.start()
            try:
                results[engine.label] = measure(engine, args.mib, args.rounds, log)
            finally:
                engine.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = open("/proc/loadavg").read().split()[:3]
    print(f"### Restore latency, {args.mib} MiB (bench/restore_latency.py --mib {args.mib} "
          f"--rounds {args.rounds})\n")
    print(f"Machine: {harness.describe(machine)}; load after: {' '.join(load_after)}\n")
    print(table(results, args.mib))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "mib": args.mib, "rounds": args.rounds,
                       "results": results}, f, indent=1)
    if args.plot:
        plot(results, args.mib, args.plot)


if __name__ == "__main__":
    main()
