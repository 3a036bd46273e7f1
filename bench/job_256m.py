#!/usr/bin/env python3
"""A process job holding 256 MiB of dirty memory, checkpointed and restored two ways in
the same run, on the same program:

  ARCH   `archctl job checkpoint ID --export DIR` (CRIU dump through its RPC protocol into
         the store, SHA-256 manifest, durable commit, then a tar.zst archive written to a
         temp file and renamed) and `archctl job restore ID --from ARCHIVE` (unpack into a
         scratch key of the store, verify every file against the manifest, CRIU restore
         with the tree made archd's child again).
  CRIU   `criu dump -t PID -D DIR` and `criu restore -D DIR -d` run by hand on the same
         program (no store, no hashing, no fsync, no archive): the floor.

The workload is a C program that fills 256 MiB with pseudo-random bytes (incompressible:
the worst case for the archive) and keeps touching it. Each way is repeated (--rounds) and
the medians are compared as ratios; the rounds of the two are interleaved (order
alternating) so that both see the same load. Run as root after scripts/setup.sh (or with
ARCH_BUILD_DIR pointing at a build):   bench/job_256m.py [--rounds 3]
"""

import argparse
import ctypes
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
from archtest import proc  # noqa: E402
from archtest.jobs import Node  # noqa: E402
import benchlib  # noqa: E402

CRIU = os.environ.get("ARCH_CRIU", "/opt/arch/criu/bin/criu")
BUILD = os.environ.get("ARCH_BUILD_DIR") or os.path.join(REPO, "build")
HOG_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(void) {
  size_t n = 256u << 20;
  uint64_t* p = malloc(n);
  uint64_t x = 88172645463325252ull;
  for (size_t i = 0; i < n / 8; ++i) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; p[i] = x; }
  printf("ready\n");
  fflush(stdout);
  for (unsigned t = 0;; ++t) { p[(t * 512u) % (n / 8)] ^= 1; usleep(20000); }
}
"""


NodeConfig = benchlib.NodeConfig
timed = benchlib.timed_output


class ArchSide:
    """The hog as a job of a private archd; one round = checkpoint --export, restore --from."""

    def __init__(self, workdir, hog):
        node_config = NodeConfig(log_file=os.path.join(workdir, "arch.log"),
                                 runc="/usr/sbin/runc", criu=CRIU)
        self.node = Node(os.path.join(BUILD, "src", "agent", "archd"),
                         os.path.join(BUILD, "src", "cli", "archctl"),
                         os.path.join(workdir, "node"), node_config).start()
        self.exports = os.path.join(workdir, "exports")
        os.makedirs(self.exports)
        self.job_id = self.node.run_job(workdir, hog, name="hog256")
        proc.wait_until(lambda: "ready" in self.node.logs(self.job_id), 120,
                        "the hog to fill its memory")
        self.dumps, self.restores, self.sizes, self.phases = [], [], [], []

    def checkpoint(self):
        env, ctl = self.node.archd.env(), self.node.archctl_binary
        t, out = timed([ctl, "job", "checkpoint", self.job_id, "--export", self.exports, "-o", "json"], env)
        self.dumps.append(t)
        reply = json.loads(out)
        self.archive = reply["archive"]
        self.sizes.append(os.path.getsize(self.archive))
        self.phases.append((reply["dump_ms"] / 1000, reply["export_ms"] / 1000))

    def restore(self):
        env, ctl = self.node.archd.env(), self.node.archctl_binary
        t, _ = timed([ctl, "job", "restore", self.job_id, "--from", self.archive], env)
        self.restores.append(t)
        os.unlink(self.archive)

    def close(self):
        self.node.cleanup()


class CriuSide:
    """The hog started by us (a subreaper, so the restored tree comes back to us); one round
    = `criu dump` then `criu restore -d`, images in a fresh directory each time."""

    def __init__(self, workdir, hog):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        self.workdir = workdir
        self.out = open(os.path.join(workdir, "hog.out"), "w")
        self.p = subprocess.Popen([hog], stdin=subprocess.DEVNULL, stdout=self.out,
                                  stderr=self.out, start_new_session=True, cwd=workdir)
        self.pid = self.p.pid
        proc.wait_until(lambda: "ready" in open(self.out.name).read(), 120,
                        "the hog to fill its memory")
        self.dumps, self.restores, self.round = [], [], 0

    def checkpoint(self):
        self.images = os.path.join(self.workdir, f"criu-{self.round}")
        os.makedirs(self.images)
        t, _ = timed([CRIU, "dump", "-t", str(self.pid), "-D", self.images, "-o", "dump.log"])
        self.dumps.append(t)
        if self.round == 0:
            self.p.wait()
        else:
            os.waitpid(self.pid, 0)
        self.round += 1

    def restore(self):
        fd = self.out.fileno()
        t, _ = timed([CRIU, "restore", "-D", self.images, "-d", "-o", "restore.log",
                      "--inherit-fd", f"fd[{fd}]:{self.out.name.lstrip('/')}"], pass_fds=(fd,))
        self.restores.append(t)
        shutil.rmtree(self.images)

    def close(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    workdir = tempfile.mkdtemp(prefix="job256-", dir="/var/tmp")
    try:
        hog = os.path.join(workdir, "hog")
        with open(hog + ".c", "w") as f:
            f.write(HOG_C)
        subprocess.run(["cc", "-O2", "-o", hog, hog + ".c"], check=True)
        load_before = open("/proc/loadavg").read().split()[:3]
        criu_side = CriuSide(workdir, hog)
        arch_side = None
        try:
            arch_side = ArchSide(workdir, hog)
            # Interleaved, the order alternating, so both see the same machine.
            for r in range(args.rounds):
                sides = [arch_side, criu_side] if r % 2 == 0 else [criu_side, arch_side]
                for side in sides:
                    side.checkpoint()
                for side in sides:
                    side.restore()
        finally:
            criu_side.close()
            if arch_side:
                arch_side.close()
        a_dump, a_restore, phases = arch_side.dumps, arch_side.restores, arch_side.phases
        size = statistics.median(arch_side.sizes)
        c_dump, c_restore = criu_side.dumps, criu_side.restores
        load_after = open("/proc/loadavg").read().split()[:3]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    md, mr = statistics.median(a_dump), statistics.median(a_restore)
    cd, cr = statistics.median(c_dump), statistics.median(c_restore)
    print(benchlib.run_heading())
    print(f"`bench/job_256m.py --rounds {args.rounds}` (medians; 256 MiB of incompressible "
          f"dirty memory; load {' '.join(load_before)} before, {' '.join(load_after)} after)\n")
    print("| | checkpoint | restore | checkpoint vs CRIU | restore vs CRIU |")
    print("|---|---|---|---|---|")
    print(f"| ARCH (`job checkpoint --export` / `job restore --from`) | {md:.3f} s | {mr:.3f} s "
          f"| {md / cd:.2f}x | {mr / cr:.2f}x |")
    print(f"| CRIU by hand (`criu dump` / `criu restore -d`) | {cd:.3f} s | {cr:.3f} s "
          f"| 1.00x | 1.00x |")
    dump_s = statistics.median(p[0] for p in phases)
    export_s = statistics.median(p[1] for p in phases)
    print(f"\nInside ARCH's checkpoint (medians): CRIU dump over RPC {dump_s:.3f} s, "
          f"manifest + durable commit {md - dump_s - export_s:.3f} s (with archctl/HTTP), "
          f"archive {export_s:.3f} s.")
    print(f"Archive size (median): {size / 2**20:.1f} MiB. Every round: "
          f"ARCH {[round(x, 3) for x in a_dump]} / {[round(x, 3) for x in a_restore]}, "
          f"CRIU {[round(x, 3) for x in c_dump]} / {[round(x, 3) for x in c_restore]}.")


if __name__ == "__main__":
    main()
