#!/usr/bin/env python3
"""Finalize against a store slower than the node's memory (issue 14): what is saved before
the deadline with the plan (`--plan on`, the default) and without it (`--plan off`: every
container dumped side by side, as before the plan), on the same containers, same store.

The store is an ext4 file system on a loop device whose writes are limited with the
cgroup-v1 blkio throttle (blkio.throttle.write_bps_device) for the finalize and everything
it starts (runc, CRIU): ARCH's writeback thread and its fsyncs submit the writes, so the
limit applies to them (the kernel's flusher does not start before 30 s or 10% of RAM dirty).
Before each run one container is checkpointed alone (--leave-running) so the store's rate
is measured the way a node learns it from its earlier checkpoints.

Run as root after building (cmake --build build):
    bench/deadline_store.py [--containers 6] [--mib 192] [--rate-mb 60] [--deadline 10]
                            [--parallel 4] [--no-write]
Prints a table (saved within the deadline, saved in all, the last finish) and, unless
--no-write, adds it to bench/RESULTS.md.

The sweep (issue 14): containers of mixed sizes (--sizes, MiB), several deadlines
(--deadlines), plan on and off, each against what the rate physically allows (the most
containers, and the most bytes, whose sizes add up to at most rate x deadline):
    bench/deadline_store.py --sweep [--sizes 64,64,256,256,512,1024] [--rate-mb 30]
                            [--deadlines 10,30,60,120] [--parallel 4] [--no-write]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402
from finalize_scale import Node, pool_map  # noqa: E402
from archtest import proc, workloads  # noqa: E402

HEADING = "## Finalize against a slow store: the deadline plan (bench/deadline_store.py)"
SWEEP_HEADING = ("## Finalize against a slow store: sweep of deadlines and container sizes "
                 "(bench/deadline_store.py --sweep)")
BLKIO = "/sys/fs/cgroup/blkio"
ARCHCTL = os.path.join(benchlib.REPO, "build", "src", "cli", "archctl")


class SlowStore:
    """An ext4 file system on a loop device, mounted at `mountpoint`, and a blkio cgroup
    that limits writes to it."""

    def __init__(self, workdir, mountpoint, size_gib, rate_bps):
        self.image = os.path.join(workdir, "store.img")
        self.mountpoint = mountpoint
        self.cgroup = os.path.join(BLKIO, f"arch-bench-{os.getpid()}")
        with open(self.image, "wb") as f:
            f.truncate(size_gib << 30)
        self.loop = subprocess.run(["losetup", "--find", "--show", self.image], check=True,
                                   capture_output=True, text=True).stdout.strip()
        subprocess.run(["mkfs.ext4", "-q", "-F", self.loop], check=True)
        os.makedirs(mountpoint, exist_ok=True)
        subprocess.run(["mount", self.loop, mountpoint], check=True)
        os.chmod(mountpoint, 0o700)
        dev = os.stat(self.loop).st_rdev
        os.makedirs(self.cgroup, exist_ok=True)
        with open(os.path.join(self.cgroup, "blkio.throttle.write_bps_device"), "w") as f:
            f.write(f"{os.major(dev)}:{os.minor(dev)} {rate_bps}\n")

    def argv(self, *argv):
        """argv run inside the throttled cgroup."""
        return ["/bin/sh", "-c", f'echo $$ > {self.cgroup}/cgroup.procs && exec "$@"', "sh",
                *argv]

    def close(self):
        subprocess.run(["umount", self.mountpoint], check=False)
        subprocess.run(["losetup", "-d", self.loop], check=False)
        try:
            os.rmdir(self.cgroup)
        except OSError:
            pass
        os.unlink(self.image)


def archctl(node, store, *args, timeout=600):
    r = subprocess.run(store.argv(ARCHCTL, *args), capture_output=True, text=True,
                       env=dict(os.environ, ARCH_CONFIG=node.conf), timeout=timeout)
    return r


def one_run(node, store, plan, args, round_no, sizes=None, deadline=None):
    ns = node.new_namespace(f"dl-{plan}-{round_no}")
    sizes = sizes or [args.mib] * args.containers
    deadline = deadline or args.deadline
    ids = [f"m{i}" for i in range(len(sizes))]
    argvs = {cid: workloads.memory("/data/ticks.txt", "/data/sums.txt", mib=mib, ms=100)
             for cid, mib in zip(ids, sizes)}
    # The warm-up checkpoint: the container closest to 256 MiB (a rate sample, not start-up).
    warm = min(zip(ids, sizes), key=lambda x: abs(x[1] - 256))[0]
    try:
        pool_map(lambda cid: node.run(ns, cid, argvs[cid], arch=True), ids)
        for cid in ids:
            path = os.path.join(node.rootfs(ns, cid), "data/ticks.txt")
            proc.wait_until(lambda: os.path.exists(path) and os.path.getsize(path) > 0, 120,
                            f"{cid} to fill its memory", interval=0.1)
        # The node learns the store's rate from a checkpoint of its own.
        r = archctl(node, store, "container", "checkpoint", f"{ns}/{warm}", "--leave-running")
        if r.returncode != 0:
            raise RuntimeError(f"warm-up checkpoint failed: {r.stderr[-1500:]}")
        with open(os.path.join(node.state, "store-rates.json")) as f:
            learned = json.load(f)
        start = time.perf_counter()
        r = archctl(node, store, "container", "finalize", "--deadline", str(deadline),
                    "--parallel", str(args.parallel), "--plan", plan, "-o", "json")
        wall = time.perf_counter() - start
        report = json.loads(r.stdout)
        mine = [c for c in report["containers"] if c["namespace"] == ns]
        done = [c for c in mine if c["result"] == "checkpointed"]
        in_time = [c for c in done if c["finished_s"] <= deadline]
        return {
            "plan": plan,
            "deadline": deadline,
            "bytes_in_time": sum(c["bytes"] for c in in_time),
            "stopped": sum(1 for c in mine if c["result"] == "stopped"),
            "saved_in_time": len(in_time),
            "saved": len(done),
            "skipped": sum(1 for c in mine if c["result"] == "skipped"),
            "last_finish": max((c["finished_s"] for c in done), default=0),
            "wall": wall,
            "rate_mb": next(iter(learned.values()))["single_bps"] / 1e6,
            "basis": "; ".join(report.get("plans", {}).values()),
            "bytes": sum(c["bytes"] for c in done),
        }
    finally:
        node.remove(ns, ids)


def physically_allowed(sizes_bytes, capacity):
    """(most containers, most bytes) whose sizes add up to at most `capacity`."""
    count = 0
    for n in range(len(sizes_bytes), 0, -1):
        if sum(sorted(sizes_bytes)[:n]) <= capacity:
            count = n
            break
    best = 0
    for mask in range(1 << len(sizes_bytes)):
        total = sum(b for i, b in enumerate(sizes_bytes) if mask >> i & 1)
        if total <= capacity:
            best = max(best, total)
    return count, best


def sweep(args):
    sizes = [int(x) for x in args.sizes.split(",")]
    deadlines = [float(x) for x in args.deadlines.split(",")]
    workdir = tempfile.mkdtemp(prefix="arch-deadline-")
    os.chmod(workdir, 0o755)
    store = node = None
    rows = []
    try:
        store = SlowStore(workdir, os.path.join(workdir, "store"),
                          max(4, (sum(sizes) * 3 >> 10) + 2), args.rate_mb * 1000 * 1000)
        program = workloads.compile_program(workdir)
        node = Node(workdir, workloads.build_image(workdir, program))
        node.start()
        n = 0
        for deadline in deadlines:
            for plan in ["off", "on"]:
                try:
                    os.unlink(os.path.join(node.state, "store-rates.json"))
                except FileNotFoundError:
                    pass
                row = one_run(node, store, plan, args, n, sizes, deadline)
                n += 1
                row["allowed"], row["allowed_bytes"] = physically_allowed(
                    [m << 20 for m in sizes], args.rate_mb * 1e6 * deadline)
                rows.append(row)
                print(row, flush=True)
    finally:
        if node:
            node.stop()
        if store:
            store.close()
        shutil.rmtree(workdir, ignore_errors=True)
    mib = lambda b: f"{b / (1 << 20):.0f} MiB"  # noqa: E731
    lines = [benchlib.run_heading(), "",
             f"`bench/deadline_store.py --sweep --sizes {args.sizes} --rate-mb {args.rate_mb} "
             f"--deadlines {args.deadlines} --parallel {args.parallel}`: {len(sizes)} containers "
             f"({args.sizes} MiB, {sum(sizes)} MiB in all), a store limited to {args.rate_mb} MB/s "
             f"(loop device, blkio throttle). 'Allowed': the most containers (bytes) whose sizes "
             f"add up to at most rate x deadline.", "",
             "| deadline | plan | saved in time | allowed | ratio | bytes in time | bytes allowed "
             "| stopped | skipped | last finish |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["saved_in_time"] / r["allowed"] if r["allowed"] else 0
        lines.append(f"| {r['deadline']:g} s | {r['plan']} | {r['saved_in_time']} | "
                     f"{r['allowed']} | {ratio:.2f} | {mib(r['bytes_in_time'])} | "
                     f"{mib(r['allowed_bytes'])} | {r['stopped']} | {r['skipped']} | "
                     f"{r['last_finish']:.1f} s |")
    lines += [""] + [f"- {r['deadline']:g} s, plan {r['plan']}: {r['basis']}"
                     for r in rows if r["basis"] and r["plan"] == "on"]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if not args.no_write:
        benchlib.add_to_results(SWEEP_HEADING, text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--sizes", default="64,64,256,256,512,1024")
    ap.add_argument("--deadlines", default="10,30,60,120")
    ap.add_argument("--containers", type=int, default=6)
    ap.add_argument("--mib", type=int, default=192)
    ap.add_argument("--rate-mb", type=int, default=60, help="store write limit, MB/s")
    ap.add_argument("--deadline", type=float, default=10)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0 or not os.path.isdir(BLKIO):
        sys.exit("needs root and the cgroup-v1 blkio controller")
    if args.sweep:
        return sweep(args)
    workdir = tempfile.mkdtemp(prefix="arch-deadline-")
    os.chmod(workdir, 0o755)
    store = node = None
    rows = []
    try:
        store = SlowStore(workdir, os.path.join(workdir, "store"),
                          max(4, (args.containers * args.mib * 3 >> 10) + 2),
                          args.rate_mb * 1000 * 1000)
        program = workloads.compile_program(workdir)
        node = Node(workdir, workloads.build_image(workdir, program))
        node.start()
        for n, plan in enumerate(["off", "on"]):
            try:
                os.unlink(os.path.join(node.state, "store-rates.json"))
            except FileNotFoundError:
                pass
            rows.append(one_run(node, store, plan, args, n))
            print(rows[-1], flush=True)
    finally:
        if node:
            node.stop()
        if store:
            store.close()
        shutil.rmtree(workdir, ignore_errors=True)
    lines = [benchlib.run_heading(), "",
             f"`bench/deadline_store.py --containers {args.containers} --mib {args.mib} "
             f"--rate-mb {args.rate_mb} --deadline {args.deadline} --parallel {args.parallel}`: "
             f"{args.containers} containers holding {args.mib} MiB each, a store limited to "
             f"{args.rate_mb} MB/s (loop device, blkio throttle), `finalize --deadline "
             f"{args.deadline:g}`.", "",
             "| plan | saved before the deadline | saved in all | skipped | last finish | rate learned |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['plan']} | {r['saved_in_time']} | {r['saved']} | {r['skipped']} | "
                     f"{r['last_finish']:.1f} s | {r['rate_mb']:.0f} MB/s |")
    lines += [""] + [f"- plan {r['plan']}: {r['basis']}" for r in rows if r["basis"]]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if not args.no_write:
        benchlib.add_to_results(HEADING, text)


if __name__ == "__main__":
    main()
