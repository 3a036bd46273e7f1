#!/usr/bin/env python3
"""A spot day (issue 14): a CPU-bound job interrupted by reclaim notices, each time resumed
on the other node, against the same job uninterrupted and against restarting from scratch.

Set-up: the two-node harness of the e2e tests (tests/e2e/archtest/twonode.py): two network
and mount namespaces, each with its own containerd, archd and fake EC2 metadata service,
sharing a GlusterFS volume (ARCH's shared mode: checkpoints and the job's work dir on it).
The job: `--steps` steps of a hash held only in memory (busybox sh arithmetic, one CPU),
writing its progress every 20000 steps and its result at the end to its work dir.

Notices come from a seeded trace: the time from each (re)start of the job to its next
notice is exponential with mean `--mean-interval` seconds (a Poisson process, rate
1/mean), drawn with random.Random(--seed). On a notice the node's metadata service reports
a spot "terminate"; archd drains the node (finalize); the job's container is removed and
the same job (ARCH_JOB_ID) started on the other node, where ARCH restores it.
Restarting from scratch is run, not computed: the same job, meeting the same trace
(its intervals, then further draws of the same seeded process), is killed at each notice
as a node without ARCH loses it, and started again from zero on the other node (a new
job id, so nothing is restored). `--scratch-limit` bounds its restarts; the table also
gives the figure computed from the trace and the uninterrupted time, as a check.

Run as root after building:
    bench/spot_day.py [--steps 30000000] [--mean-interval 20] [--seed 14] [--no-write]
Prints a table, draws bench/plots/spot_day.png (progress against wall time) and, unless
--no-write, adds the table to bench/RESULTS.md.
"""

import argparse
import os
import random
import secrets
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402
from harness import gnuplot  # noqa: E402
from archtest import gluster, proc, twonode, workloads  # noqa: E402

HEADING = "## A spot day: a CPU-bound job across reclaim notices (bench/spot_day.py)"
BUILD = os.path.join(benchlib.REPO, "build")


def job_argv(n):
    return ["sh", "-c",
            f"i=0; h=0; while [ $i -lt {n} ]; do h=$(( (h*31 + i) % 1000000007 )); "
            f"i=$((i+1)); [ $((i % 20000)) -eq 0 ] && echo $i > progress.txt; done; "
            f"echo $h > result.txt; exit 0"]


def expected(n):
    h = 0
    for i in range(n):
        h = (h * 31 + i) % 1000000007
    return h


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def notice_drain(node):
    proc.wait_until(lambda: node.archd.status()["watcher"]["state"] == "polling", 20,
                    f"archd on {node.name} to poll")
    before = (node.archd.status().get("drain") or {}).get("id")
    node.imds.set_spot(action="terminate", in_seconds=120)

    def drained():
        d = node.archd.status().get("drain") or {}
        return d if d.get("id") != before and d.get("state") == "done" else None
    return proc.wait_until(drained, 180, f"the drain on {node.name}", interval=0.05)


def sample(work, n, t0, done, samples):
    """One look at the job's work dir: appends (wall seconds, steps) to samples; returns
    (steps done, result or "")."""
    # The job rewrites its progress file (a read can see it empty): never backwards.
    steps = read(os.path.join(work, "progress.txt"))
    done = max(done, int(steps) if steps.isdigit() else 0)
    result = read(os.path.join(work, "result.txt"))
    samples.append((time.monotonic() - t0, n if result else done))
    return done, result


def job_env(cluster, job):
    return [f"ARCH_SHAREDFS_HOST_PATH={cluster.shared}", "ARCH_WORKDIR_CONTAINER_PATH=/work",
            f"ARCH_JOB_ID={job}"]


def run_job(cluster, n, trace, samples):
    """Runs the job to its end, a notice at each trace interval (seconds from each start);
    appends (wall seconds, steps) to samples. Returns (total seconds, notices, result,
    create seconds of the first start)."""
    job = f"spot-{secrets.token_hex(3)}"
    env = job_env(cluster, job)
    nodes = [cluster.a, cluster.b]
    node, k = nodes[0], 0
    cid = f"{job}-0"
    t0 = time.monotonic()
    node.start_container(cid, job_argv(n), env)
    create_s = time.monotonic() - t0
    work = cluster.work_dir(job, node)
    notices = 0
    intervals = list(trace)
    seg_start = time.monotonic()
    done = 0
    while True:
        done, result = sample(work, n, t0, done, samples)
        if result:
            break
        if intervals and time.monotonic() - seg_start >= intervals[0]:
            intervals.pop(0)
            drain = notice_drain(node)
            got = {x["id"]: x["result"] for x in drain["report"]["containers"]}
            if got.get(cid) != "checkpointed":
                raise RuntimeError(f"notice {notices + 1}: {cid} {got.get(cid)}: {drain}")
            notices += 1
            node.delete(cid)
            node.imds.clear_spot()
            node.archctl_json("node", "undrain")
            k += 1
            node, cid = nodes[k % 2], f"{job}-{k}"
            node.start_container(cid, job_argv(n), env)
            seg_start = time.monotonic()
            continue
        time.sleep(0.2)
    total = time.monotonic() - t0
    node.delete(cid)
    return total, notices, int(result), create_s


def run_from_scratch(cluster, n, gaps, samples, limit):
    """The same job without checkpoints: at each interval from `gaps` (seconds from each
    start) its container is killed and the job started again from zero on the other node
    under a new job id. Returns (total seconds, restarts, result), result None when
    `limit` restarts did not finish it."""
    nodes = [cluster.a, cluster.b]
    t0 = time.monotonic()
    restarts = 0
    for gap in gaps:
        node = nodes[restarts % 2]
        job = f"scratch-{secrets.token_hex(3)}"
        cid = f"{job}-{restarts}"
        node.start_container(cid, job_argv(n), job_env(cluster, job))
        work = cluster.work_dir(job, node)
        seg_start, done = time.monotonic(), 0
        while True:
            done, result = sample(work, n, t0, done, samples)
            if result:
                total = time.monotonic() - t0
                node.delete(cid)
                return total, restarts, int(result)
            if time.monotonic() - seg_start >= gap:
                break
            time.sleep(0.2)
        # The node is lost with the job on it: all of its work goes with it.
        node.ctr("task", "kill", "-s", "SIGKILL", cid)
        node.delete(cid)
        samples.append((time.monotonic() - t0, 0))
        restarts += 1
        if restarts >= limit:
            return time.monotonic() - t0, restarts, None
    raise RuntimeError("the trace ended")


def from_scratch(t_job, gaps, restart_s, limit=100000):
    """(total seconds, restarts, samples) of restarting from zero at each notice; `gaps`
    yields the trace's intervals (the same ones ARCH met, then further draws)."""
    total, samples, restarts = 0.0, [(0.0, 0.0)], 0
    for gap in gaps:
        if gap >= t_job or restarts >= limit:
            break
        samples += [(total + gap, gap / t_job), (total + gap + restart_s, 0.0)]
        total += gap + restart_s
        restarts += 1
    samples.append((total + t_job, 1.0))
    return total + t_job, restarts, samples


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30000000)
    ap.add_argument("--mean-interval", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--scratch-limit", type=int, default=40,
                    help="most restarts of the from-scratch run")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--plot", default=os.path.join(HERE, "plots", "spot_day.png"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    if gluster.available():
        sys.exit(f"GlusterFS: {gluster.available()}")
    rng = random.Random(args.seed)
    trace = [rng.expovariate(1 / args.mean_interval) for _ in range(64)]
    workdir = tempfile.mkdtemp(prefix="arch-spot-day-")
    os.chmod(workdir, 0o755)
    program = workloads.compile_program(workdir)
    oci, _ = workloads.build_image(workdir, program)
    binaries = twonode.Binaries(os.path.join(BUILD, "src", "shim", "arch-runc"),
                                os.path.join(BUILD, "src", "cli", "archctl"),
                                os.path.join(BUILD, "src", "agent", "archd"),
                                os.environ.get("ARCH_CRIU", "/opt/arch/criu/bin/criu"))
    plain, arch, scratch_run = [], [], []

    def gaps(rng):
        yield from trace
        while True:  # the same seeded process, further on
            yield rng.expovariate(1 / args.mean_interval)
    try:
        with twonode.Cluster(os.path.join(workdir, "two-node"), binaries, workloads.IMAGE_NAME,
                             oci) as cluster:
            t_plain, _, r_plain, create_s = run_job(cluster, args.steps, [], plain)
            t_arch, notices, r_arch, _ = run_job(cluster, args.steps, trace, arch)
            # A copy of the generator's state: the computed figure meets the same draws.
            rng_run = random.Random()
            rng_run.setstate(rng.getstate())
            t_run, run_restarts, r_run = run_from_scratch(
                cluster, args.steps, gaps(rng_run), scratch_run, args.scratch_limit)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    want = expected(args.steps)
    t_scratch, restarts, _ = from_scratch(t_plain, gaps(rng), create_s)
    run_done = str(r_run == want) if r_run is not None else (
        f"not finished after {run_restarts} restarts")
    used = trace[:notices]
    lines = [benchlib.run_heading(), "",
             f"`bench/spot_day.py --steps {args.steps} --mean-interval {args.mean_interval:g} "
             f"--seed {args.seed}`: the job alone takes {t_plain:.1f} s; notices arrive after "
             f"exponential intervals of mean {args.mean_interval:g} s from each (re)start "
             f"(seeded; the intervals used: {', '.join(f'{x:.1f}' for x in used)} s).", "",
             "| run | completion | against uninterrupted | interruptions | result correct |",
             "|---|---|---|---|---|",
             f"| uninterrupted | {t_plain:.1f} s | 1.00 | 0 | {r_plain == want} |",
             f"| ARCH: checkpoint, resume on the other node | {t_arch:.1f} s | "
             f"{t_arch / t_plain:.2f} | {notices} | {r_arch == want} |",
             f"| restart from scratch (same trace, run) | {t_run:.1f} s | "
             f"{t_run / t_plain:.2f} | {run_restarts} | {run_done} |",
             f"| restart from scratch (same trace, computed; restart {create_s:.1f} s) | "
             f"{t_scratch:.1f} s | "
             f"{t_scratch / t_plain:.2f} | {restarts} | - |", ""]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    data = os.path.join(tempfile.gettempdir(), f"spot-day-{os.getpid()}")
    os.makedirs(data, exist_ok=True)
    for name, pts in (("plain", [(t, s / args.steps) for t, s in plain]),
                      ("arch", [(t, s / args.steps) for t, s in arch]),
                      ("scratch", [(t, s / args.steps) for t, s in scratch_run])):
        with open(os.path.join(data, name), "w") as f:
            f.writelines(f"{t:.2f} {p:.4f}\n" for t, p in pts)
    os.makedirs(os.path.dirname(args.plot), exist_ok=True)
    gnuplot(f"""set terminal pngcairo size 900,500
set output '{args.plot}'
set title 'A spot day: job progress against wall time ({notices} reclaim notices)'
set xlabel 'seconds'
set ylabel 'fraction of the job done'
set key top left
plot '{data}/plain' with lines lw 2 title 'uninterrupted', \\
     '{data}/arch' with lines lw 2 title 'ARCH (resumed on the other node)', \\
     '{data}/scratch' with lines lw 2 title 'restart from scratch'
""")
    shutil.rmtree(data, ignore_errors=True)
    if not args.no_write:
        benchlib.add_to_results(HEADING, text + f"\n![spot day](plots/{os.path.basename(args.plot)})\n")


if __name__ == "__main__":
    main()
