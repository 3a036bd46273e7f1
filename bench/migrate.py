#!/usr/bin/env python3
"""Live migration (issue 16): downtime and total time of moving a running container from
node a to node b, two ways, side by side in one run, for each memory size:

  post-copy   `archctl container migrate NS/ID --to b`: freeze + dump into a's local store
              (tasks held frozen), the non-memory images and rootfs diff streamed to b, b
              re-creates the container and restores it lazily, memory fetched from a's archd
              chunk by chunk (verified). Downtime: a frozen → b running; total: until every
              page has moved and a has cleaned up. (Figures from the command's report.)
  handoff     `archctl container migrate NS/ID --to b --handoff` (what orchestrated
              containers get): freeze + dump, every file including the memory streamed to b
              and committed there, a's tasks end; then the "orchestrator" (this script)
              starts the container on b, which restores from that generation (plain).
              Downtime: frozen (the report's ms.frozen) + the create on b until RUNNING; the
              orchestrator's own reschedule delay is not counted.
  shared      checkpoint to a shared store, then restore: `archctl container checkpoint` on a
              (ARCH_SHAREDFS_HOST_PATH: the store is a directory both nodes see), then the
              container is created on b and restored from it (plain restore). Downtime =
              total = checkpoint time + the create on b until RUNNING.

Two nodes on this machine (tests/e2e/archtest/twonode.py: own network and mount namespaces,
containerd and archd each; the shared store is a plain directory of this machine, i.e. a
fast "shared FS": the alternative is measured at its best). The workload is the tests'
memory program (a known pattern in N MiB, touched every tick). Run as root with a build:
  ARCH_BUILD_DIR=build bench/migrate.py [--sizes 64,256,1024] [--no-results]
No timing is asserted anywhere.
"""

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
from archtest import checkpoint, daemons, proc, twonode, workloads  # noqa: E402
import benchlib  # noqa: E402

BUILD = os.environ.get("ARCH_BUILD_DIR") or os.path.join(REPO, "build")
CRIU = os.environ.get("ARCH_CRIU", "/opt/arch/criu/bin/criu")


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def post_copy(cluster, mib):
    a, b = cluster.a, cluster.b
    cid = checkpoint.new_id(f"pc{mib}")
    a.start_container(cid, workloads.memory("/data/t.txt", "/data/s.txt", mib=mib, ms=50),
                      env=[f"ARCH_JOB_ID={cid}"])
    proc.wait_until(lambda: len(workloads.complete_lines(a.read(cid, "/data/t.txt") or "")) > 3,
                    120, "the workload to start")
    r = a.archctl("container", "migrate", f"{cluster.ns}/{cid}", "--to", "b", "-o", "json",
                  timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    b.containers.append(cid)
    cluster.migrated.append(cid)
    b.ctr("task", "kill", "-s", "SIGKILL", cid)
    b.delete(cid)
    return report


def handoff(cluster, mib):
    a, b = cluster.a, cluster.b
    cid = checkpoint.new_id(f"ho{mib}")
    argv = workloads.memory("/data/t.txt", "/data/s.txt", mib=mib, ms=50)
    env = [f"ARCH_JOB_ID={cid}"]
    a.start_container(cid, argv, env=env)
    proc.wait_until(lambda: len(workloads.complete_lines(a.read(cid, "/data/t.txt") or "")) > 3,
                    120, "the workload to start")
    r = a.archctl("container", "migrate", f"{cluster.ns}/{cid}", "--to", "b", "--handoff",
                  "-o", "json", timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    a.delete(cid)  # the orchestrator removes the ended container ...
    t1 = time.monotonic()
    b.start_container(cid, argv, env=env)  # ... and starts it again on b
    t_restore = time.monotonic() - t1
    cluster.migrated.append(cid)
    b.ctr("task", "kill", "-s", "SIGKILL", cid)
    b.delete(cid)
    frozen = report["ms"]["frozen"]
    return {"frozen_ms": frozen, "restore_ms": t_restore * 1000,
            "downtime_ms": frozen + t_restore * 1000}


def via_shared_store(cluster, mib):
    a, b = cluster.a, cluster.b
    cid = checkpoint.new_id(f"sh{mib}")
    env = [f"ARCH_JOB_ID={cid}", f"ARCH_SHAREDFS_HOST_PATH={cluster.shared}",
           "ARCH_WORKDIR_CONTAINER_PATH=/work"]
    argv = workloads.memory("/data/t.txt", "/data/s.txt", mib=mib, ms=50)
    a.start_container(cid, argv, env=env)
    proc.wait_until(lambda: len(workloads.complete_lines(a.read(cid, "/data/t.txt") or "")) > 3,
                    120, "the workload to start")
    t0 = time.monotonic()
    r = a.archctl("container", "checkpoint", f"{cluster.ns}/{cid}", "-o", "json", timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    t_ckpt = time.monotonic() - t0
    a.delete(cid)
    t1 = time.monotonic()
    b.start_container(cid, argv, env=env)
    t_restore = time.monotonic() - t1
    b.ctr("task", "kill", "-s", "SIGKILL", cid)
    b.delete(cid)
    return {"checkpoint_ms": t_ckpt * 1000, "restore_ms": t_restore * 1000,
            "downtime_ms": (t_ckpt + t_restore) * 1000}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="64,256,1024")
    ap.add_argument("--no-results", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    base = tempfile.mkdtemp(prefix="arch-bench-migrate-")
    os.chmod(base, 0o700)
    out = os.path.join(base, "workloads")
    os.makedirs(out)
    program = workloads.compile_program(out)
    oci, _ = workloads.build_image(out, program)
    binaries = twonode.Binaries(os.path.join(BUILD, "src", "shim", "arch-runc"),
                                os.path.join(BUILD, "src", "cli", "archctl"),
                                os.path.join(BUILD, "src", "agent", "archd"), CRIU)
    rows = []
    load_before = loadavg()
    cluster = twonode.Cluster(os.path.join(base, "c"), binaries, workloads.IMAGE_NAME, oci,
                              glusterfs=False, peers=True)
    cluster.migrated = []
    with cluster:
        try:
            for mib in sizes:
                pc = post_copy(cluster, mib)
                ho = handoff(cluster, mib)
                sh = via_shared_store(cluster, mib)
                rows.append((mib, pc, ho, sh))
                print(f"{mib} MiB: post-copy downtime {pc['ms']['downtime']:.0f} ms total "
                      f"{pc['ms']['total']:.0f} ms; handoff {ho['downtime_ms']:.0f} ms; "
                      f"shared store {sh['downtime_ms']:.0f} ms", file=sys.stderr)
        finally:
            for cid in cluster.migrated:
                checkpoint.sweep_cgroup(f"{cluster.ns}-b", cid)
    for n in ("a", "b"):
        daemons.remove_cgroup_parent(f"{cluster.ns}-{n}")
    lines = [benchlib.run_heading(), "",
             f"load average before/after: {load_before} / {loadavg()}", "",
             "| memory | post-copy downtime | post-copy total | of which post-copy | "
             "handoff then restore (downtime) | "
             "checkpoint → shared store → restore (downtime = total) | downtime ratio |",
             "|---|---|---|---|---|---|---|"]
    for mib, pc, ho, sh in rows:
        ms = pc["ms"]
        lines.append(f"| {mib} MiB | {ms['downtime']:.0f} ms | {ms['total']:.0f} ms | "
                     f"{ms.get('post_copy', 0):.0f} ms ({pc['bytes'].get('post_copy', 0) >> 20} MiB)"
                     f" | {ho['downtime_ms']:.0f} ms (frozen {ho['frozen_ms']:.0f}, "
                     f"restore {ho['restore_ms']:.0f})"
                     f" | {sh['downtime_ms']:.0f} ms (checkpoint {sh['checkpoint_ms']:.0f}, "
                     f"restore {sh['restore_ms']:.0f}) | {sh['downtime_ms'] / ms['downtime']:.2f}× |")
    lines += ["", "Downtime ratio: checkpoint → shared store → restore over post-copy."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_results:
        benchlib.add_to_results("## Live migration (bench/migrate.py)", text)


if __name__ == "__main__":
    main()
