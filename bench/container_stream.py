#!/usr/bin/env python3
"""Container checkpoints with the pages through ARCH's page receiver ([checkpoint]
pages_at_rest), against today's direct write and the store's own sequential rate measured in
the same run. Containers (containerd + arch-runc, bench/harness.py) holding N MiB of dirty
memory (default 256 and 1024), checkpointed three ways:

  plain       pages_at_rest = plain: CRIU (through runc's RPC) writes pagemap and pages
              images into the staging; the commit flushes them and hashes every file.
  streamed    pages_at_rest = streamed: `runc checkpoint --page-server` sends the pages to
              ARCH's receiver, which writes them (4 MiB writes) and digests them as they pass
              (per-MiB chunk SHA-256 and the file's): the commit does not read them again.
  encrypted   pages_at_rest = encrypted: the same, each 4 MiB chunk sealed (AES-256-GCM, key
              from the node key) as it arrives, uncompressed ([jobs] stream_compression =
              off: the ratio asked is the uncompressed one).

Throughput = the container's memory / (dump + flush and commit), from archctl's timings.
The store's rate: max(N, 1024) MiB written by dd with 4 MiB blocks and conv=fsync into the
store's directory, measured before each size. Restore: create-to-running of `ctr run -d` and
until the workload counts on (encrypted pages: always lazily through ARCH's page server).
Run as root with a build:   bench/container_stream.py [--sizes 256,1024] [--rounds 2]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from harness import ARCHCTL, ArchEngine, compile_hog, dir_bytes, read_beat, run  # noqa: E402

MODES = ("plain", "streamed", "encrypted")


def store_rate(directory, mib):
    """MB/s of dd writing `mib` MiB (4 MiB blocks) with one fsync at the end."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "rate-probe")
    start = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=4M", f"count={mib // 4}",
                    "conv=fsync"], check=True, capture_output=True)
    seconds = time.perf_counter() - start
    os.unlink(path)
    return mib * (1 << 20) / seconds / 1e6


def set_mode(engine, base_text, mode):
    with open(engine.conf, "w") as f:
        f.write(base_text + f"\n[checkpoint]\npages_at_rest = {mode}\n"
                "[jobs]\nstream_compression = off\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,1024", help="MiB of dirty memory, comma-separated")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-results", action="store_true", help="do not add to RESULTS.md")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="arch-bench-cstream-")
    engine = None
    rows = []
    try:
        hog = compile_hog(work)
        engine = ArchEngine(os.path.join(work, "arch"), hog)
        with open(engine.conf) as f:
            base_text = f.read()
        engine.start()
        for mib in (int(x) for x in args.sizes.split(",")):
            rate = store_rate(engine.store, max(mib, 1024))
            print(f"store: {rate:.0f} MB/s (dd, {max(mib, 1024)} MiB, conv=fsync)", flush=True)
            results = {m: {"tput": [], "seconds": [], "size": [], "restore": [],
                           "ready": []} for m in MODES}
            for r in range(args.rounds):
                order = MODES[r % 3:] + MODES[:r % 3]
                for mode in order:
                    set_mode(engine, base_text, mode)
                    name = f"cs-{mode}-{mib}-{r}"
                    engine.start_workload(name, mib, touch=True)
                    out = json.loads(run([ARCHCTL, "container", "checkpoint",
                                          f"{engine.NS}/{name}", "-o", "json"],
                                         env=engine.env).stdout)
                    engine.at_checkpoint[name] = read_beat(engine.out_dir(name))
                    engine._delete(name)
                    t = out["timings_ms"]
                    seconds = (t.get("dump", 0) + t.get("commit", 0)) / 1000
                    res = results[mode]
                    res["seconds"].append(seconds)
                    res["tput"].append(mib * (1 << 20) / seconds / 1e6)
                    res["size"].append(dir_bytes(out["checkpoint"]) / (1 << 20))
                    running, ready = engine.restore(name, lazy=False)
                    res["restore"].append(running)
                    res["ready"].append(ready)
                    engine.remove(name)
                    engine.forget_checkpoint(name)
                    print(f"{mib} MiB {mode}: dump+commit {seconds:.2f} s "
                          f"({res['tput'][-1]:.0f} MB/s, {res['tput'][-1] / rate:.2f} of the "
                          f"store), restore running {running:.2f} s, counting {ready:.2f} s",
                          flush=True)
            for mode in MODES:
                res = results[mode]
                tput = statistics.median(res["tput"])
                rows.append((mib, mode, rate, statistics.median(res["seconds"]), tput,
                             tput / rate, statistics.median(res["size"]),
                             statistics.median(res["restore"]), statistics.median(res["ready"])))
    finally:
        if engine:
            engine.stop()
        shutil.rmtree(work, ignore_errors=True)
    lines = ["| memory | pages | store (dd) | dump + commit | throughput | / store | "
             "checkpoint | restore: running | counting |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mib, mode, rate, sec, tput, ratio, size, running, ready in rows:
        lines.append(f"| {mib} MiB | {mode} | {rate:.0f} MB/s | {sec:.2f} s | {tput:.0f} MB/s | "
                     f"{ratio:.2f} | {size:.0f} MiB | {running:.2f} s | {ready:.2f} s |")
    table = "\n".join(lines)
    print(table)
    if not args.no_results:
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        benchlib.add_to_results(
            "## Container pages through ARCH's page receiver (bench/container_stream.py)",
            benchlib.run_heading() + f", load average at the end {load}\n\n"
            f"`bench/container_stream.py --sizes {args.sizes} --rounds {args.rounds}` (medians): "
            "plain = CRIU writes the pages images (today); streamed / encrypted = `runc "
            "checkpoint --page-server` to ARCH's receiver, stored plain / as AES-256-GCM "
            "chunks, uncompressed. Throughput = memory / (dump + flush and commit); the store's "
            f"rate by dd (4 MiB blocks, conv=fsync) in the same run.\n\n{table}\n")


if __name__ == "__main__":
    main()
