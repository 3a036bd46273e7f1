#!/usr/bin/env python3
"""Checkpointing every container of a node at once (a spot reclaim), N = 25..200, three ways
on the same kind of containers in the same run:

  ARCH      `archctl container finalize` of N ARCH-enabled containerd tasks (arch-runc):
            freeze, rootfs diff, CRIU dump, manifest with SHA-256, durable commit, end.
  runc loop `runc checkpoint` of N plain containerd tasks, one after another (what the
            original ARCH did through `ctr`): the CRIU dump alone, no rootfs, no fsync.
  Podman    `podman container checkpoint --all` of N Podman containers.

Workloads: `idle` (busybox `sleep`) and `mem16` (the archtest worker holding 16 MiB of
memory that it keeps dirtying). Each (workload, N, method) starts N fresh containers,
measures the wall time of the checkpoint command(s) only, checks that every container was
checkpointed, and removes everything. `--archctl-before PATH` adds a column for another
archctl build (before/after a change, same run). Prints a markdown table and, unless
--no-write, adds it to bench/RESULTS.md under "Finalize at scale".

Run as root after building (cmake --build build):
    bench/finalize_scale.py [--sizes 25,50,100,200] [--workloads idle,mem16]
                            [--methods arch,runc,podman] [--parallel N]
"""

import argparse
import concurrent.futures
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
from archtest import daemons, proc, workloads  # noqa: E402
import benchlib  # noqa: E402

RUNC = "/usr/sbin/runc"
CRIU = "/opt/arch/criu/bin/criu"
HEADING = "## Finalize at scale (bench/finalize_scale.py)"
CREATE_WORKERS = 4


def workload_argv(name):
    if name == "idle":
        return ["sleep", "1000000"]
    return workloads.memory("/data/ticks.txt", "/data/sums.txt", mib=16, ms=50)


def load():
    return open("/proc/loadavg").read().split()[0]


def pool_map(fn, items, workers=CREATE_WORKERS):
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


class Node:
    """A private containerd whose ARCH config points at a private store and registry."""

    def __init__(self, workdir, archives):
        self.workdir = workdir
        self.store = os.path.join(workdir, "store")
        self.state = os.path.join(workdir, "state")
        self.conf = daemons.write_node_config(os.path.join(workdir, "etc"),
                                              os.path.join(workdir, "arch.log"), level="info",
                                              criu=CRIU, store=self.store, state=self.state)
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        self.ctd = daemons.Containerd(os.path.join(workdir, "containerd"),
                                      env={"ARCH_CONFIG": self.conf, "PATH": path})
        self.runc_root = os.path.join(workdir, "runc-root")
        self.archives = archives
        self.namespaces = []

    def start(self):
        os.makedirs(self.runc_root, mode=0o700, exist_ok=True)
        self.ctd.start()

    def new_namespace(self, name):
        self.ctd.ctr("images", "import", self.archives[0], ns=name, check=True, timeout=120)
        self.namespaces.append(name)
        return name

    def run(self, ns, cid, argv, arch):
        runtime = os.path.join(REPO, "build/src/shim/arch-runc") if arch else RUNC
        args = ["run", "-d", "--runc-root", self.runc_root, "--runc-binary", runtime,
                "--log-uri", f"file://{self.workdir}/out-{cid}.log"]
        if arch:
            args += ["--env", "ARCH_ENABLE=1"]
        self.ctd.ctr(*args, workloads.IMAGE_NAME, cid, *argv, ns=ns, check=True, timeout=120)

    def rootfs(self, ns, cid):
        return os.path.join(self.ctd.task_dir(ns), cid, "rootfs")

    def remove(self, ns, ids):
        def one(cid):
            self.ctd.ctr("task", "kill", "-s", "SIGKILL", cid, ns=ns, timeout=30)
            self.ctd.ctr("task", "delete", "-f", cid, ns=ns, timeout=60)
            self.ctd.ctr("containers", "rm", cid, ns=ns, timeout=60)
        pool_map(one, ids)
        shutil.rmtree(self.store, ignore_errors=True)
        shutil.rmtree(os.path.join(self.workdir, "runc-images"), ignore_errors=True)

    def stop(self):
        self.ctd.stop()
        for ns in self.namespaces:
            daemons.remove_cgroup_parent(ns)


PROFILES = {}
CPU = {}  # (workload, n, method) -> CPU seconds (user + system) of the checkpoint command(s)


class CpuClock:
    """CPU time of the children reaped inside the block: the checkpoint commands with
    their runc, CRIU, tar and gzip descendants (what the machine's CPUs had to do)."""

    def __enter__(self):
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.start = r.ru_utime + r.ru_stime
        return self

    def __exit__(self, *exc):
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.seconds = r.ru_utime + r.ru_stime - self.start


def profile(report):
    """Where finalize's time went: wall time per phase (when it reports them) and the mean
    of each per-container step (ms)."""
    steps = {}
    for c in report["containers"]:
        for k, v in (c.get("timings_ms") or {}).items():
            steps.setdefault(k, []).append(v)
    means = {k: sum(v) / len(v) for k, v in steps.items() if k != "total"}
    phases = report.get("phase_seconds", {})
    text = "phases " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()) if phases else ""
    if means:
        text += ("; " if text else "") + "mean per container " + ", ".join(
            f"{k} {v:.0f} ms" for k, v in sorted(means.items()))
    if "parallel" in report:
        text += f"; {report['parallel']} at once"
    return text


def wait_ready(paths, workload):
    """mem16 containers are ready once their worker has filled its memory (first tick)."""
    if workload == "idle":
        return
    for path in paths:
        proc.wait_until(lambda: os.path.exists(path) and os.path.getsize(path) > 0, 120,
                        f"{path} to be written", interval=0.05)


def bench_arch(node, workload, n, archctl, parallel, tag):
    ns = node.new_namespace(f"fs-{tag}-{workload}-{n}")
    ids = [f"c{i:03d}" for i in range(n)]
    try:
        pool_map(lambda cid: node.run(ns, cid, workload_argv(workload), arch=True), ids)
        wait_ready([os.path.join(node.rootfs(ns, c), "data/ticks.txt") for c in ids], workload)
        argv = [archctl, "container", "finalize", "--deadline", "600", "-o", "json"]
        if parallel:
            argv += ["--parallel", str(parallel)]
        start = time.perf_counter()
        with CpuClock() as cpu:
            r = subprocess.run(argv, capture_output=True, text=True,
                               env=dict(os.environ, ARCH_CONFIG=node.conf))
        elapsed = time.perf_counter() - start
        CPU[(workload, n, "arch" if tag == "arch" else "before")] = cpu.seconds
        try:
            report = json.loads(r.stdout)
        except json.JSONDecodeError:
            raise RuntimeError(f"finalize printed no JSON (exit {r.returncode}): {r.stderr[-2000:]}")
        done = [c for c in report["containers"] if c["result"] == "checkpointed"]
        if len(done) != n:
            bad = [c for c in report["containers"] if c["result"] != "checkpointed"][:3]
            raise RuntimeError(f"finalize: {len(done)}/{n} checkpointed: {bad}")
        PROFILES[(tag, workload, n)] = profile(report)
        return elapsed
    finally:
        node.remove(ns, ids)


def bench_runc_loop(node, workload, n):
    ns = node.new_namespace(f"fs-runc-{workload}-{n}")
    ids = [f"c{i:03d}" for i in range(n)]
    images = os.path.join(node.workdir, "runc-images")
    try:
        pool_map(lambda cid: node.run(ns, cid, workload_argv(workload), arch=False), ids)
        wait_ready([os.path.join(node.rootfs(ns, c), "data/ticks.txt") for c in ids], workload)
        root = os.path.join(node.runc_root, ns)
        start = time.perf_counter()
        with CpuClock() as cpu:
            for cid in ids:
                r = subprocess.run([RUNC, "--root", root, "--criu", CRIU, "checkpoint",
                                    "--image-path", f"{images}/{cid}", "--work-path",
                                    f"{images}/{cid}-work", cid], capture_output=True, text=True)
                if r.returncode != 0:
                    raise RuntimeError(f"runc checkpoint {cid}: {r.stderr[-2000:]}")
        CPU[(workload, n, "runc")] = cpu.seconds
        return time.perf_counter() - start
    finally:
        node.remove(ns, ids)


class Podman:
    def __init__(self, workdir, archive):
        self.env = dict(os.environ, PATH=os.path.dirname(CRIU) + ":" + os.environ.get("PATH", ""))
        self.store = store = os.path.join(workdir, "podman")
        self.common = ["podman", "--root", os.path.join(store, "root"), "--runroot",
                       os.path.join(store, "run")]
        self.archive = archive
        self.loaded = False

    def cmd(self, *args, check=True, timeout=600):
        r = subprocess.run(self.common + list(args), capture_output=True, text=True, env=self.env,
                           stdin=subprocess.DEVNULL, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args[:3])}: {r.returncode}: {r.stderr[-2000:]}")
        return r

    def bench(self, workload, n):
        if not self.loaded:
            self.cmd("load", "-i", self.archive)
            self.loaded = True
        names = [f"fs-{workload}-{n}-{i:03d}" for i in range(n)]
        try:
            pool_map(lambda name: self.cmd(
                "run", "-d", "--name", name, "--network", "none", "--ulimit", "nproc=4096:4096",
                "--ulimit", "nofile=1024:1024", workloads.IMAGE_NAME, *workload_argv(workload)),
                names)
            # `podman run -d` can return before a loaded machine started the container, and
            # `checkpoint --all` refuses one still "created": wait until all run.
            proc.wait_until(lambda: self.cmd("inspect", "-f", "{{.State.Status}}", *names)
                            .stdout.split().count("running") == n, 300,
                            "every Podman container to run", interval=0.5)
            if workload != "idle":
                uppers = self.cmd("inspect", "-f", "{{.GraphDriver.Data.UpperDir}}",
                                  *names).stdout.split()
                wait_ready([os.path.join(u, "data/ticks.txt") for u in uppers], workload)
            start = time.perf_counter()
            with CpuClock() as cpu:
                self.cmd("container", "checkpoint", "--all")
            elapsed = time.perf_counter() - start
            CPU[(workload, n, "podman")] = cpu.seconds
            states = self.cmd("inspect", "-f", "{{.State.Status}} {{.State.Checkpointed}}",
                              *names).stdout.splitlines()
            if states.count("exited true") != n:
                raise RuntimeError(f"podman checkpoint --all: states {sorted(set(states))}")
            return elapsed
        finally:
            self.remove_all()

    def remove_all(self):
        """rm -af until nothing is left (a loaded machine can leave some behind)."""
        for _ in range(3):
            self.cmd("rm", "-af", "-t", "0", check=False)
            left = self.cmd("ps", "-aq", check=False).stdout.split()
            if not left:
                return
        raise RuntimeError(f"podman containers left after rm -af: {left}")

    def stop(self):
        self.remove_all()  # raises before the store is reset while containers still run
        self.cmd("system", "reset", "-f", check=False)
        daemons.unmount_all_under(self.store)  # the overlay driver's own bind mount


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="25,50,100,200")
    parser.add_argument("--workloads", default="idle,mem16")
    parser.add_argument("--methods", default="arch,runc,podman")
    parser.add_argument("--parallel", type=int, default=0,
                        help="archctl finalize --parallel (0: archctl's default)")
    parser.add_argument("--archctl", default=os.path.join(REPO, "build/src/cli/archctl"))
    parser.add_argument("--archctl-before", default="",
                        help="another archctl build to measure beside (column 'ARCH before')")
    parser.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    # A SIGTERM (timeout, kill PID) still runs the cleanup below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    sizes = [int(s) for s in args.sizes.split(",")]
    methods = args.methods.split(",")
    if args.archctl_before:
        methods.insert(1, "before")
    names = {"arch": "ARCH finalize", "before": "ARCH before", "runc": "runc loop",
             "podman": "Podman --all"}
    load_before = open("/proc/loadavg").read().strip()
    workdir = tempfile.mkdtemp(prefix="arch-finalize-scale-")
    os.chmod(workdir, 0o755)
    results = {}
    node = podman = None
    try:
        program = workloads.compile_program(workdir)
        archives = workloads.build_image(workdir, program)
        node = Node(workdir, archives)
        node.start()
        podman = Podman(workdir, archives[1]) if shutil.which("podman") else None
        for workload in args.workloads.split(","):
            for n in sizes:
                for m in methods:
                    t0 = load()
                    if m == "arch":
                        t = bench_arch(node, workload, n, args.archctl, args.parallel, "arch")
                    elif m == "before":
                        t = bench_arch(node, workload, n, args.archctl_before, args.parallel, "old")
                    elif m == "runc":
                        t = bench_runc_loop(node, workload, n)
                    elif podman is not None:
                        t = podman.bench(workload, n)
                    else:
                        continue
                    results[(workload, n, m)] = t
                    cpu = CPU.get((workload, n, m), 0)
                    print(f"{workload:6} N={n:3} {names[m]:14} {t:8.2f} s  CPU {cpu:7.2f} s"
                          f"  (load {t0})", flush=True)
                    tag = {"arch": "arch", "before": "old"}.get(m)
                    if tag and (tag, workload, n) in PROFILES:
                        print(f"    {PROFILES[(tag, workload, n)]}", flush=True)
    finally:
        podman_clean = True
        if podman:
            try:
                podman.stop()
            except RuntimeError as e:
                podman_clean = False
                print(f"NOT removing {workdir}: {e}", file=sys.stderr)
        if node:
            node.stop()
        if podman_clean:
            shutil.rmtree(workdir, ignore_errors=True)
    load_after = open("/proc/loadavg").read().strip()
    cmdline = "bench/finalize_scale.py " + " ".join(sys.argv[1:])
    lines = [benchlib.run_heading(),
             f"`{cmdline.strip()}`; loadavg before: {load_before}; after: {load_after}", "",
             "Wall time of the checkpoint command(s) only; in brackets the CPU seconds (user + "
             "system) they and their runc, CRIU, tar and gzip children used. With 2 CPUs, "
             "wall >= CPU / 2: that is the physical bound.", ""]
    cols = [m for m in methods if any(k[2] == m for k in results)]
    header = "| workload | N | " + " | ".join(names[m] for m in cols)
    header += " | runc loop / ARCH | Podman / ARCH |"
    lines += [header, "|" + "---|" * (len(cols) + 4)]
    for workload in args.workloads.split(","):
        for n in sizes:
            row = [results.get((workload, n, m)) for m in cols]
            if all(v is None for v in row):
                continue
            arch = results.get((workload, n, "arch"))
            ratio = lambda m: (f"{results[(workload, n, m)] / arch:.2f}x"
                               if arch and (workload, n, m) in results else "")
            cells = [f"{v:.2f} s ({CPU.get((workload, n, m), 0):.1f})" if v is not None else ""
                     for v, m in zip(row, cols)]
            lines.append(f"| {workload} | {n} | " + " | ".join(cells) +
                         f" | {ratio('runc')} | {ratio('podman')} |")
    lines.append("")
    lines.append("Where ARCH's time went (from `finalize -o json`):")
    lines.append("")
    for (tag, workload, n), text in sorted(PROFILES.items()):
        if not text:
            continue
        lines.append(f"- {names['arch' if tag == 'arch' else 'before']}, {workload}, N={n}: {text}")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if not args.no_write and results:
        benchlib.add_to_results(HEADING, text)


if __name__ == "__main__":
    main()
