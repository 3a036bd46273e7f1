#!/usr/bin/env python3
"""The streaming path against the store's own sequential rate, in the same run: process jobs
holding N MiB (default 256) of dirty memory, either random (incompressible) or compressible
(two random bytes in each 8, the rest zero: zstd -1 ratio ~0.34, as memory images often
are), checkpointed and restored by private archd nodes on the same
filesystem, side by side:

  files         [jobs] stream_images = false: CRIU (RPC) writes plain image files, the commit
                then hashes them (SHA-256 manifest) and fsyncs; the restore hashes them first.
  stream        stream_images = true, stream_compression = off: `criu dump --stream` hands
                the images to ARCH, which encrypts them (AES-256-GCM chunks, HKDF key from the
                node key) as they arrive; the same commit; the restore serves them back
                verified per chunk.
  stream+auto   the same with stream_compression = auto: each chunk zstd-compressed before
                it is encrypted where that saves time, the level chosen from the store's kept
                rate (seeded with the rate measured at the start of this run) against the
                compressor's measured throughput; chunks that do not shrink stay raw.
  stream+zstd   (compressible memory only) stream_compression = zstd: always compressed
                (level 3).

The store's rate: max(N, 1024) MiB written with 4 MiB writes and one fdatasync into the
same directory, measured between the rounds (a short probe reads high from caching below
the VM). Rounds rotate the order of the nodes.
Reports medians, the ratios checkpoint throughput (of the job's memory) / store rate, the
bytes stored and the share of chunks compressed.
With --store-mbps R the nodes' stores (and the rate probe) are on an ext4 loop device whose
writes are limited to R MB/s (the cgroup-v1 blkio throttle of bench/deadline_store.py, this
process and everything it starts inside it): a store slower than the compressor, as an EBS
gp3 volume (125 MB/s) or a shared file system is; the probe then writes N MiB.
Run as root with a build:   bench/stream_job.py [--mib 256] [--rounds 3] [--store-mbps R]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
from archtest import daemons, proc  # noqa: E402
from archtest.jobs import Node  # noqa: E402
import benchlib  # noqa: E402

CRIU = os.environ.get("ARCH_CRIU", "/opt/arch/criu/bin/criu")
BUILD = os.environ.get("ARCH_BUILD_DIR") or os.path.join(REPO, "build")
HOG_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char** argv) {
  size_t n = (size_t)atoi(argv[1]) << 20;
  uint64_t mask = argc > 2 && argv[2][0] == 'c' ? 0x000000ff000000ffull : ~0ull;
  uint64_t* p = malloc(n);
  uint64_t x = 88172645463325252ull;
  for (size_t i = 0; i < n / 8; ++i) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; p[i] = x & mask; }
  printf("ready\n");
  fflush(stdout);
  for (unsigned t = 0;; ++t) { p[(t * 512u) % (n / 8)] ^= 1; usleep(20000); }
}
"""


NodeConfig = benchlib.NodeConfig
timed = benchlib.timed_output


def store_rate(directory, mib):
    """MB/s of mib MiB written in 4 MiB writes and one fdatasync (then removed)."""
    path = os.path.join(directory, "rate-probe")
    block = os.urandom(4 << 20)
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(mib // 4):
            os.write(fd, block)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    os.unlink(path)
    return mib * 2**20 / 1e6 / elapsed


def seed_store_rate(node, mbps):
    """Keeps `mbps` as the node's store rate (container/deadline_plan.h's store-rates.json),
    as earlier checkpoints would have: what auto compression chooses its level against."""
    state = node.archd.node.state
    os.makedirs(state, exist_ok=True)
    with open(os.path.join(state, "store-rates.json"), "w") as f:
        json.dump({node.store: {"single_bps": mbps * 1e6, "aggregate_bps": 0,
                                "updated": int(time.time())}}, f)


class Side:
    def __init__(self, name, workdir, hog, mib, keys, memory, compression):
        base = os.path.join(workdir, name)
        config = NodeConfig(log_file=os.path.join(workdir, name + ".log"), runc="/usr/sbin/runc",
                            criu=CRIU, keys=keys)
        self.name, self.memory = name, memory
        jobs = "" if compression is None else (
            f"stream_images = true\nstream_compression = {compression}\n")
        self.node = Node(os.path.join(BUILD, "src", "agent", "archd"),
                         os.path.join(BUILD, "src", "cli", "archctl"), base, config, jobs).start()
        jobdir = os.path.join(workdir, name + "-job")
        os.makedirs(jobdir)
        self.job_id = self.node.run_job(jobdir, hog, str(mib), memory, name="hog")
        proc.wait_until(lambda: "ready" in self.node.logs(self.job_id), 120, "the hog")
        self.dumps, self.restores, self.stored, self.compressed = [], [], [], []

    def checkpoint(self):
        env, ctl = self.node.archd.env(), self.node.archctl_binary
        t, out = timed([ctl, "job", "checkpoint", self.job_id, "-o", "json"], env)
        self.dumps.append(t)
        ckpt = json.loads(out)["checkpoint"]
        self.stored.append(sum(os.path.getsize(os.path.join(d, f))
                               for d, _, fs in os.walk(ckpt) for f in fs))
        with open(os.path.join(ckpt, "manifest.json")) as f:
            stream = json.load(f).get("extra", {}).get("image_stream")
        if stream:
            self.compressed.append(f"{stream.get('compressed_chunks', 0)}/"
                                   f"{stream.get('chunks', 0)}")

    def restore(self):
        env, ctl = self.node.archd.env(), self.node.archctl_binary
        t, _ = timed([ctl, "job", "restore", self.job_id, "-o", "json"], env)
        self.restores.append(t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="only files, stream and stream+auto on random memory and stream+auto "
                         "on compressible memory")
    ap.add_argument("--store-mbps", type=int, default=0,
                    help="limit the store's writes to this rate (loop device, blkio throttle)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    workdir = tempfile.mkdtemp(prefix="streambench-", dir="/var/tmp")
    sides, rates, slow = [], [], None
    probe_mib = max(args.mib, 1024)
    try:
        if args.store_mbps:
            from deadline_store import BLKIO, SlowStore  # noqa: PLC0415
            slow = SlowStore(workdir, os.path.join(workdir, "store"),
                             max(4, (args.mib * 7 * 3 >> 10) + 4), args.store_mbps * 10**6)
            with open(os.path.join(slow.cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
            workdir, probe_mib = slow.mountpoint, args.mib
        hog = os.path.join(workdir, "hog")
        with open(hog + ".c", "w") as f:
            f.write(HOG_C)
        subprocess.run(["cc", "-O2", "-o", hog, hog + ".c"], check=True)
        keys, _ = daemons.make_key_dir(os.path.join(workdir, "keys"))
        load_before = open("/proc/loadavg").read().split()[:3]
        rates.append(store_rate(workdir, probe_mib))
        plan = [("files", "random", None), ("stream", "random", "off"),
                ("stream+auto", "random", "auto"), ("files", "compressible", None),
                ("stream", "compressible", "off"), ("stream+auto", "compressible", "auto"),
                ("stream+zstd", "compressible", "zstd")]
        if args.quick:
            plan = [plan[0], plan[1], plan[2], plan[5]]
        for name, memory, compression in plan:
            side = Side(f"{name}-{memory}", workdir, hog, args.mib, keys, memory, compression)
            sides.append(side)
            seed_store_rate(side.node, rates[0])
        for r in range(args.rounds):
            order = sides[r % len(sides):] + sides[:r % len(sides)]
            if r > 0:
                rates.append(store_rate(workdir, probe_mib))
            for s in order:
                s.checkpoint()
            for s in order:
                s.restore()
        load_after = open("/proc/loadavg").read().split()[:3]
    finally:
        for s in sides:
            s.node.cleanup()
        if slow:
            shutil.rmtree(slow.mountpoint, ignore_errors=True)
            with open(os.path.join(BLKIO, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
            slow.close()
            workdir = os.path.dirname(slow.mountpoint)
        shutil.rmtree(workdir, ignore_errors=True)
    rate = statistics.median(rates)
    mb = args.mib * 2**20 / 1e6
    print(benchlib.run_heading())
    quick = " --quick" if args.quick else ""
    quick += f" --store-mbps {args.store_mbps}" if args.store_mbps else ""
    print(f"`bench/stream_job.py --mib {args.mib} --rounds {args.rounds}{quick}` (medians; "
          f"{args.mib} MiB of dirty memory per job, random or compressible; archctl wall time "
          f"including the manifest, durable commit and HTTP; MB/s of the job's memory; load "
          f"{' '.join(load_before)} before, {' '.join(load_after)} after)\n")
    limit = (f"; limited to {args.store_mbps} MB/s (loop device, blkio throttle)"
             if args.store_mbps else "")
    print(f"Store's own sequential rate (4 MiB writes + fdatasync, {probe_mib} MiB, same "
          f"filesystem, between rounds{limit}): {rate:.0f} MB/s (rounds: "
          f"{[round(x) for x in rates]}); auto compression's kept store rate seeded with the "
          f"first.\n")
    print("| path | memory | checkpoint | checkpoint MB/s | vs store rate | restore | "
          "restore MB/s | stored | chunks compressed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s in sides:
        d, r = statistics.median(s.dumps), statistics.median(s.restores)
        name = s.name.rsplit("-", 1)[0]
        print(f"| {name} | {s.memory} | {d:.3f} s | {mb / d:.0f} | {mb / d / rate:.2f} | "
              f"{r:.3f} s | {mb / r:.0f} | {statistics.median(s.stored) / 2**20:.1f} MiB | "
              f"{', '.join(s.compressed) or '-'} |")
    print("\nEvery round: " + "; ".join(
        f"{s.name} {[round(x, 3) for x in s.dumps]} / {[round(x, 3) for x in s.restores]}"
        for s in sides))


if __name__ == "__main__":
    main()
