#!/usr/bin/env python3
"""What arch-runc adds to a runtime call that ARCH passes through (issue: "Foundation").

Two measurements, each alternating the runtimes call by call on the same container so
machine noise hits both alike, reported as ratios of medians:

1. `state ID`: `arch-runc state` against `runc state` on one running runc container,
   plus the floor: a static C program that does nothing but execv runc.
2. A whole containerd lifecycle (`ctr run -d`, `ctr task kill -s SIGKILL`,
   `ctr task delete -f`, `ctr container delete`) through a private containerd with
   `--runc-binary arch-runc` against the same with runc.

Run as root after scripts/setup.sh:   bench/passthrough.py [--calls 400] [--lifecycles 30]
Results are printed as a Markdown table (append them to bench/RESULTS.md).
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
from archtest import daemons, image  # noqa: E402

import benchlib  # noqa: E402

RUNC = "/usr/sbin/runc"
FLOOR_C = r"""
#include <unistd.h>
int main(int argc, char** argv) { (void)argc; execv("%s", argv); return 127; }
"""


def timed_spawn(argv, env):
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        start = time.perf_counter_ns()
        pid = os.posix_spawn(argv[0], argv, env, file_actions=[
            (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
            (os.POSIX_SPAWN_DUP2, devnull, 2)])
        _, status = os.waitpid(pid, 0)
        elapsed = time.perf_counter_ns() - start
    finally:
        os.close(devnull)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv} failed with status {status}")
    return elapsed / 1e6


def build_floor(workdir):
    return benchlib.compile_static(workdir, "exec-floor", FLOOR_C % RUNC)


def bench_state(arch_runc, workdir, calls, env):
    bundle = benchlib.make_bundle(workdir, ["sleep", "3600"])
    root = os.path.join(workdir, "runc-root")
    cid = f"arch-bench-{os.getpid()}"
    floor = build_floor(workdir)
    subprocess.run([RUNC, "--root", root, "run", "-d", "--bundle", bundle, cid],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
    try:
        times = {"runc": [], "arch-runc": [], "exec-floor": []}
        binaries = {"runc": RUNC, "arch-runc": arch_runc, "exec-floor": floor}
        for name, binary in binaries.items():  # warm-up
            timed_spawn([binary, "--root", root, "state", cid], env)
        for _ in range(calls):
            for name, binary in binaries.items():
                times[name].append(timed_spawn([binary, "--root", root, "state", cid], env))
        return {k: statistics.median(v) for k, v in times.items()}
    finally:
        subprocess.run([RUNC, "--root", root, "delete", "-f", cid], check=False)


def bench_lifecycle(arch_runc, workdir, rounds, config_path):
    ctd = daemons.Containerd(os.path.join(workdir, "containerd"),
                             env={"ARCH_CONFIG": config_path})
    ns = "arch-bench"
    archives = image.build_archives(workdir)
    ctd.start()
    try:
        ctd.ctr("images", "import", archives[0], ns=ns, check=True, timeout=120)
        runc_root = os.path.join(workdir, "ctr-runc-root")
        os.makedirs(runc_root, mode=0o700)

        def lifecycle(binary, n):
            cid = f"life-{n}"
            steps = [
                ["run", "-d", "--runc-binary", binary, "--runc-root", runc_root,
                 image.IMAGE_NAME, cid, "sleep", "600"],
                ["task", "kill", "-s", "SIGKILL", cid],
                ["task", "delete", "-f", cid],
                ["containers", "delete", cid],
            ]
            start = time.perf_counter_ns()
            for step in steps:
                r = ctd.ctr(*step, ns=ns, timeout=60)
                if r.returncode != 0:
                    raise RuntimeError(f"ctr {step} failed: {r.stderr}")
            return (time.perf_counter_ns() - start) / 1e6

        times = {"runc": [], "arch-runc": []}
        lifecycle(RUNC, "warm-runc")
        lifecycle(arch_runc, "warm-arch")
        for n in range(rounds):
            times["runc"].append(lifecycle(RUNC, f"r{n}"))
            times["arch-runc"].append(lifecycle(arch_runc, f"a{n}"))
        return {k: statistics.median(v) for k, v in times.items()}
    finally:
        ctd.stop()
        daemons.remove_cgroup_parent(ns)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch-runc", default=os.path.join(REPO, "build/src/shim/arch-runc"))
    parser.add_argument("--calls", type=int, default=400, help="state calls per runtime")
    parser.add_argument("--lifecycles", type=int, default=30, help="lifecycles per runtime")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (it starts runc containers and a private containerd)")
    workdir = tempfile.mkdtemp(prefix="arch-bench-")
    os.chmod(workdir, 0o700)
    try:
        # A production-like node config (level info) that arch-runc trusts.
        conf_dir = os.path.join(workdir, "etc-arch")
        config = daemons.write_node_config(conf_dir, os.path.join(workdir, "arch.log"),
                                           level="info")
        env = dict(os.environ, ARCH_CONFIG=config)
        state = bench_state(args.arch_runc, workdir, args.calls, env)
        life = bench_lifecycle(args.arch_runc, workdir, args.lifecycles, config)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(benchlib.run_heading())
    print(f"`bench/passthrough.py --calls {args.calls} --lifecycles {args.lifecycles}`\n")
    print("| measurement | runc (median) | arch-runc (median) | ratio | target |")
    print("|---|---|---|---|---|")
    print(f"| `state ID`, {args.calls} alternating calls | {state['runc']:.2f} ms | "
          f"{state['arch-runc']:.2f} ms | {state['arch-runc'] / state['runc']:.3f}x | <= 1.10x |")
    print(f"| same, static C exec-only floor | {state['runc']:.2f} ms | "
          f"{state['exec-floor']:.2f} ms | {state['exec-floor'] / state['runc']:.3f}x | (reference) |")
    print(f"| containerd lifecycle (run -d, kill, delete), {args.lifecycles} each | "
          f"{life['runc']:.1f} ms | {life['arch-runc']:.1f} ms | "
          f"{life['arch-runc'] / life['runc']:.3f}x | <= 1.05x |")


if __name__ == "__main__":
    main()
