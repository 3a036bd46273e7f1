#!/usr/bin/env python3
"""Checkpoint and restore of a container holding 64 MiB of dirty memory, three ways on
the same workload in the same run:

  ARCH    `archctl container checkpoint` of a containerd task created through arch-runc
          (freeze, rootfs diff, CRIU dump, manifest with SHA-256, durable commit), then the
          restore that `ctr run` of the same id triggers (verify, apply diff, runc restore).
  runc    `runc checkpoint` / `runc restore -d` on a plain runc container (no store, no
          manifest, no rootfs diff, no fsync): the floor ARCH builds on.
  Podman  `podman container checkpoint --export` / `podman container restore --import`.

Each is repeated (--rounds) and the medians are compared as ratios. The workload is a
static C program that fills 64 MiB with a pattern and keeps touching it.
Run as root after scripts/setup.sh:   bench/checkpoint_64m.py [--rounds 5]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from archtest import daemons, image, proc  # noqa: E402

import benchlib  # noqa: E402

RUNC = "/usr/sbin/runc"
CRIU = "/opt/arch/criu/bin/criu"
HOG_C = r"""
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(void) {
  size_t n = 64u << 20;
  unsigned char* p = malloc(n);
  for (size_t i = 0; i < n; ++i) p[i] = (unsigned char)(i * 31u);
  for (unsigned t = 0;; ++t) { p[(t * 4096u) % n] ^= 1; usleep(20000); }
}
"""


def timed(argv, env=None, check=True):
    start = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.returncode}: {r.stderr[-2000:]}")
    return elapsed


def bench_arch(workdir, hog, rounds):
    etc = os.path.join(workdir, "etc")
    os.makedirs(etc, mode=0o755)
    conf = os.path.join(etc, "arch.conf")
    with open(conf, "w") as f:
        f.write(f"[runtime]\nrunc = {RUNC}\ncriu = {CRIU}\n"
                f"[log]\nlevel = info\nfile = {workdir}/arch.log\n"
                f"[store]\npath = {workdir}/store\n[state]\ndir = {workdir}/state\n"
                f"[keys]\ndir = {daemons.make_key_dir(os.path.join(etc, 'keys'))[0]}\n")
    os.chmod(conf, 0o644)
    env = dict(os.environ, ARCH_CONFIG=conf)
    ctd = daemons.Containerd(os.path.join(workdir, "containerd"), env={"ARCH_CONFIG": conf})
    ns = "arch-bench"
    arch_runc = os.path.join(REPO, "build/src/shim/arch-runc")
    archctl = os.path.join(REPO, "build/src/cli/archctl")
    archives = image.build_archives(workdir)
    ctd.start()
    ckpt, rest = [], []
    try:
        ctd.ctr("images", "import", archives[0], ns=ns, check=True, timeout=120)
        runc_root = os.path.join(workdir, "ctr-runc-root")
        os.makedirs(runc_root, mode=0o700)
        run = ["run", "-d", "--runc-binary", arch_runc, "--runc-root", runc_root,
               "--env", "ARCH_ENABLE=1", "--mount", f"type=bind,src={hog},dst=/hog,options=rbind:ro",
               image.IMAGE_NAME, "hog", "/hog"]
        for _ in range(rounds):
            ctd.ctr(*run, ns=ns, check=True)
            time.sleep(1.5)  # let it fill its 64 MiB
            ckpt.append(timed([archctl, "container", "checkpoint", f"{ns}/hog"], env=env))
            proc.wait_until(lambda: ctd.task_status(ns, "hog") in (None, "STOPPED"), 30, "hog end")
            ctd.ctr("task", "delete", "hog", ns=ns)
            ctd.ctr("containers", "delete", "hog", ns=ns, check=True)
            start = time.perf_counter()
            ctd.ctr(*run, ns=ns, check=True)
            rest.append(time.perf_counter() - start)
            ctd.ctr("task", "kill", "-s", "SIGKILL", "hog", ns=ns)
            proc.wait_until(lambda: ctd.task_status(ns, "hog") in (None, "STOPPED"), 30, "hog end")
            ctd.ctr("task", "delete", "hog", ns=ns)
            ctd.ctr("containers", "delete", "hog", ns=ns, check=True)
            shutil.rmtree(os.path.join(workdir, "store"), ignore_errors=True)
    finally:
        ctd.stop()
        daemons.remove_cgroup_parent(ns)
    return statistics.median(ckpt), statistics.median(rest)


def bench_runc(workdir, hog, rounds):
    bundle = benchlib.make_bundle(workdir, ["/hog"], {hog: "/hog"})
    root = os.path.join(workdir, "runc-root")
    cid = f"hog-runc-{os.getpid()}"
    ckpt, rest = [], []
    for n in range(rounds):
        images = os.path.join(workdir, f"runc-images-{n}")
        # stdio on /dev/null: CRIU cannot dump a container holding a host file as stdio.
        subprocess.run([RUNC, "--root", root, "run", "-d", "--bundle", bundle, cid],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        time.sleep(1.5)
        ckpt.append(timed([RUNC, "--root", root, "--criu", CRIU, "checkpoint", "--image-path",
                           images, cid]))
        rest.append(timed([RUNC, "--root", root, "--criu", CRIU, "restore", "-d", "--bundle",
                           bundle, "--image-path", images, cid]))
        subprocess.run([RUNC, "--root", root, "delete", "-f", cid], check=False)
        shutil.rmtree(images, ignore_errors=True)
    return statistics.median(ckpt), statistics.median(rest)


def bench_podman(workdir, hog, rounds):
    if not shutil.which("podman"):
        return None
    env = dict(os.environ, PATH=os.path.dirname(CRIU) + ":" + os.environ.get("PATH", ""))
    store = os.path.join(workdir, "podman")
    common = ["podman", "--root", os.path.join(store, "root"), "--runroot",
              os.path.join(store, "run")]
    archives = image.build_archives(workdir)
    subprocess.run(common + ["load", "-i", archives[1]], check=True, capture_output=True, env=env)
    ckpt, rest = [], []
    try:
        for n in range(rounds):
            export = os.path.join(workdir, f"podman-{n}.tar.gz")
            subprocess.run(common + ["run", "-d", "--name", "hog", "--network", "none",
                                     "--ulimit", "nproc=4096:4096", "--ulimit", "nofile=1024:1024",
                                     "-v", f"{hog}:/hog:ro", image.IMAGE_NAME, "/hog"],
                           check=True, capture_output=True, env=env)
            time.sleep(1.5)
            ckpt.append(timed(common + ["container", "checkpoint", "--export", export, "hog"], env=env))
            subprocess.run(common + ["rm", "-f", "hog"], check=True, capture_output=True, env=env)
            rest.append(timed(common + ["container", "restore", "--import", export], env=env))
            subprocess.run(common + ["rm", "-f", "hog"], check=True, capture_output=True, env=env)
    finally:
        subprocess.run(common + ["rm", "-af"], capture_output=True, env=env)
        subprocess.run(common + ["system", "reset", "-f"], capture_output=True, env=env)
    return statistics.median(ckpt), statistics.median(rest)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    workdir = tempfile.mkdtemp(prefix="arch-bench64-")
    os.chmod(workdir, 0o755)
    try:
        hog = benchlib.compile_static(workdir, "hog", HOG_C)
        parts = {}
        for name in ("arch", "runc", "podman"):
            parts[name] = os.path.join(workdir, name)
            os.makedirs(parts[name])
        arch = bench_arch(parts["arch"], hog, args.rounds)
        runc = bench_runc(parts["runc"], hog, args.rounds)
        podman = bench_podman(parts["podman"], hog, args.rounds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(benchlib.run_heading())
    print(f"`bench/checkpoint_64m.py --rounds {args.rounds}` (medians; 64 MiB dirty memory)\n")
    print("| | checkpoint | restore | checkpoint vs ARCH | restore vs ARCH |")
    print("|---|---|---|---|---|")
    rows = [("ARCH (archctl / ctr run through arch-runc)", arch), ("runc alone", runc),
            ("Podman (--export / --import)", podman)]
    for name, r in rows:
        if r is None:
            print(f"| {name} | not available | | | |")
            continue
        print(f"| {name} | {r[0]:.3f} s | {r[1]:.3f} s | {r[0] / arch[0]:.2f}x | {r[1] / arch[1]:.2f}x |")


if __name__ == "__main__":
    main()
