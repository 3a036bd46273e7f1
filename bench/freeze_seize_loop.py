#!/usr/bin/env python3
"""The freeze/seize loop (issue 13 item 6): a shell pipeline with background processes,
checkpointed again and again, counting the dumps that fail and why.

Every run starts a fresh ARCH-enabled container (private containerd, arch-runc) running
PIPELINE, waits until it has made progress, checkpoints it one way, and removes it:

  arch        `archctl container checkpoint` (runc pause, then runc checkpoint
              --leave-running of the frozen container, then the kill), what ARCH does;
  runc        `runc checkpoint` of the same kind of container without any pause: runc hands
              the container's freezer cgroup to CRIU, which freezes and seizes by itself;
  runc-pause  `runc pause` then `runc checkpoint`, without ARCH: the same order as ARCH,
              to tell ARCH's own code from the order of pause and dump.

The failure the issue saw (CRIU 4.1.1, 1 of 7 under ARCH): `Timeout reached ...
Unseizable non-zombie <pid> found, state D`, after 10 s. Usage (root, after building):

  python3 bench/freeze_seize_loop.py [--runs 50] [--modes arch,runc,runc-pause] [--json F]
                                     [--image busybox|real]

--image real: bash in the real-workload image (tests/e2e/archtest/realimage.py, built or
taken from its cache) runs the `pipeline` workload of realworkloads.py instead of busybox sh.

Prints one line per run and a table (mode, runs, failed, failures that are the seize
race, median and max checkpoint seconds); exits 1 when any run failed.
"""

import argparse
import collections
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
import benchlib  # noqa: E402
from archtest import daemons, image, proc, realimage, realworkloads  # noqa: E402

RUNC = daemons.RUNC
CRIU = os.path.join(os.environ.get("ARCH_CRIU_PREFIX") or "/opt/arch/criu", "bin", "criu")
BUILD = os.environ.get("ARCH_BUILD_DIR") or os.path.join(REPO, "build")
ARCH_RUNC = os.path.join(BUILD, "src", "shim", "arch-runc")
ARCHCTL = os.path.join(BUILD, "src", "cli", "archctl")
NS = "arch-freeze-loop"
TIMEOUT = 90  # seconds for one checkpoint: the race costs CRIU's 10 s seize timeout

# A pipeline whose producer forks a process per line (cat), a reader loop, and background
# jobs: a sleeping loop, a long sleep and a busy `yes | head` pipe restarted now and then.
# Processes are born and reaped all the time, which is when a freeze catches tasks half way.
PIPELINE = r"""
mkdir -p /data
(i=0; while :; do i=$((i+1)); echo $i | cat; usleep 5000; done) |
  (while read n; do echo $n >> /data/pipe.txt; done) &
(while :; do sleep 1; done) &
sleep 100000 &
(while :; do yes | head -c 200000 > /dev/null; usleep 20000; done) &
wait
"""


def seize_race(text):
    return "Unseizable" in text or "Timeout reached" in text or "state D" in text


class Loop:
    def __init__(self, workdir, real=False):
        self.workdir = workdir
        self.real = real
        if real:
            self.image, self.argv = realimage.IMAGE_NAME, realworkloads.by_name("pipeline").argv()
        else:
            self.image, self.argv = image.IMAGE_NAME, ["sh", "-c", PIPELINE]
        node = benchlib.private_arch(workdir, RUNC, CRIU)
        self.store, self.conf, self.env = node.store, node.conf, node.env
        self.ctd, self.runc_root = node.ctd, node.runc_root

    def start(self):
        archive = (realimage.oci_archive(realimage.build()) if self.real
                   else image.build_archives(self.workdir)[0])
        self.ctd.start()
        self.ctd.ctr("images", "import", archive, ns=NS, check=True, timeout=900)
        os.makedirs(self.runc_root, mode=0o700)

    def stop(self):
        self.ctd.stop()
        daemons.remove_cgroup_parent(NS)

    def runc(self, *args, timeout=120):
        return proc.run([RUNC, "--root", os.path.join(self.runc_root, NS), "--criu", CRIU, *args],
                        timeout=timeout)

    def rootfs_file(self, cid, path):
        try:
            with open(os.path.join(self.ctd.task_dir(NS), cid, "rootfs", path.lstrip("/"))) as f:
                return f.read()
        except OSError:
            return ""

    def run_once(self, mode):
        cid = f"fz-{mode}-{secrets.token_hex(3)}"
        self.ctd.ctr("run", "-d", "--runc-binary", ARCH_RUNC, "--runc-root", self.runc_root,
                     "--env", "ARCH_ENABLE=1", self.image, cid, *self.argv,
                     ns=NS, check=True)
        try:
            proc.wait_until(lambda: len(self.rootfs_file(cid, "/data/pipe.txt").split()) >= 20,
                            60, f"{cid} to make progress", interval=0.05)
            start = time.monotonic()
            try:
                ok, text = self.checkpoint(mode, cid)
            except subprocess.TimeoutExpired as e:
                ok, text = False, (f"timed out after {e.timeout} s: {' '.join(e.cmd[-4:])}\n"
                                   + self.dump_errors(cid))
            return ok, time.monotonic() - start, text
        finally:
            self.remove(cid)

    def checkpoint(self, mode, cid):
        """Checkpoints cid the way `mode` says; returns (ok, output and CRIU errors)."""
        if mode == "arch":
            r = proc.run([ARCHCTL, "container", "checkpoint", f"{NS}/{cid}"], env=self.env,
                         timeout=TIMEOUT)
            return r.returncode == 0, r.stdout + r.stderr
        images = self.images(cid)
        os.makedirs(images)
        text = ""
        if mode == "runc-pause":
            r = self.runc("pause", cid)
            if r.returncode != 0:
                return False, r.stdout + r.stderr
        r = self.runc("checkpoint", "--image-path", images, "--work-path", images,
                      "--leave-running", cid, timeout=TIMEOUT)
        text = r.stdout + r.stderr + self.dump_errors(cid)
        if mode == "runc-pause":
            self.runc("resume", cid)
        shutil.rmtree(images, ignore_errors=True)
        return r.returncode == 0, text

    def images(self, cid):
        return os.path.join(self.workdir, "images", cid)

    def dump_errors(self, cid):
        """The Error lines and the last lines of a runc-mode run's dump.log."""
        try:
            with open(os.path.join(self.images(cid), "dump.log"), errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return ""
        return "\n".join([x for x in lines if "Error" in x] + ["..."] + lines[-5:])

    def remove(self, cid):
        if self.ctd.task_status(NS, cid) == "PAUSED":
            self.ctd.ctr("task", "resume", cid, ns=NS)
        self.runc("resume", cid)
        self.ctd.ctr("task", "kill", "-a", "-s", "SIGKILL", cid, ns=NS)
        try:
            proc.wait_until(lambda: self.ctd.task_status(NS, cid) in (None, "STOPPED"), 30,
                            f"{cid} to stop", interval=0.05)
        except proc.WaitTimeout:
            pass
        self.ctd.ctr("task", "delete", "-f", cid, ns=NS)
        self.ctd.ctr("containers", "rm", cid, ns=NS)
        shutil.rmtree(os.path.join(self.store, NS, cid), ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--modes", default="arch,runc,runc-pause")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--image", choices=("busybox", "real"), default="busybox")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    # SIGTERM ends the run through the finally blocks: containers, daemons, temp dirs go.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for path in (ARCH_RUNC, ARCHCTL, CRIU, RUNC):
        if not os.access(path, os.X_OK):
            sys.exit(f"{path} is missing (build ARCH, run scripts/setup.sh)")
    modes = args.modes.split(",")
    results = collections.defaultdict(list)
    workdir = tempfile.mkdtemp(prefix="arch-freeze-loop-")
    loop = Loop(workdir, real=args.image == "real")
    try:
        loop.start()
        # Interleaved, so that a noisy minute of the shared machine hits every mode alike.
        for n in range(args.runs):
            for mode in modes:
                ok, seconds, text = loop.run_once(mode)
                results[mode].append({"ok": ok, "seconds": round(seconds, 3),
                                      "race": (not ok) and seize_race(text),
                                      "error": "" if ok else text[-2000:]})
                first = "" if ok else " " + " | ".join(text.strip().splitlines()[-3:])[:300]
                print(f"{n + 1:3d} {mode:10s} {'ok  ' if ok else 'FAIL'} {seconds:6.2f} s{first}",
                      flush=True)
    finally:
        loop.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n| mode | runs | failed | seize race | median s | max s |")
    print("|---|---|---|---|---|---|")
    for mode in modes:
        rs = results[mode]
        secs = [r["seconds"] for r in rs]
        print(f"| {mode} | {len(rs)} | {sum(not r['ok'] for r in rs)} | "
              f"{sum(r['race'] for r in rs)} | {statistics.median(secs):.2f} | {max(secs):.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"criu": CRIU, "runs": args.runs, "results": results}, f, indent=1)
    return 1 if any(not r["ok"] for rs in results.values() for r in rs) else 0


if __name__ == "__main__":
    sys.exit(main())
