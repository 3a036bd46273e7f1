#!/usr/bin/env python3
"""The real-workload matrix (issue 13 item 8): every workload of
tests/e2e/archtest/realworkloads.py under ARCH and under Podman, with the same CRIU.

For each workload and engine: start it in a container of the real-workload image
(tests/e2e/archtest/realimage.py, built or taken from its cache), wait until ready, give it
state, checkpoint, remove the container, restore, and check the program's own state.

  ARCH    private containerd + arch-runc (ARCH_ENABLE=1, own network namespace, as `ctr
          run` makes it); `archctl container checkpoint`, `ctr task delete`, `ctr run` of the
          same id (arch-runc restores it).
  Podman  podman 4.3 on runc with the same CRIU first on PATH, its default network (CNI
          bridge: eth0 and lo, a namespace Podman makes and re-makes at the restore),
          `podman container checkpoint --export F --file-locks`, `podman rm`,
          `podman container restore --import F --file-locks`; io_uring's container runs
          with `--security-opt seccomp=unconfined` (Podman's profile refuses io_uring_setup).
  podman-nonet  the same with `--network none` (own namespace with loopback only, as
          `ctr run` makes it for ARCH).

Usage (root): python3 bench/real_matrix.py [--engines arch,podman,podman-nonet] [--only a,b]
                                           [--json F]
Prints a Markdown table: workload, then per engine "ok" or "FAIL: reason" with the
checkpoint and restore seconds.
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
import benchlib  # noqa: E402
from archtest import daemons, proc, realimage, realworkloads  # noqa: E402

RUNC = daemons.RUNC
CRIU = os.path.join(os.environ.get("ARCH_CRIU_PREFIX") or "/opt/arch/criu", "bin", "criu")
BUILD = os.environ.get("ARCH_BUILD_DIR") or os.path.join(REPO, "build")
ARCH_RUNC = os.path.join(BUILD, "src", "shim", "arch-runc")
ARCHCTL = os.path.join(BUILD, "src", "cli", "archctl")


def timed(argv, env=None, timeout=300):
    start = time.monotonic()
    r = proc.run(argv, env=env, timeout=timeout)
    return r, time.monotonic() - start


class Arch:
    label = "ARCH"
    NS = "arch-real-matrix"

    def __init__(self, workdir):
        self.workdir = workdir
        node = benchlib.private_arch(workdir, RUNC, CRIU)
        self.store, self.conf, self.env = node.store, node.conf, node.env
        self.ctd, self.runc_root = node.ctd, node.runc_root
        self.argv = {}

    def start(self, image_dir):
        self.ctd.start()
        self.ctd.ctr("images", "import", realimage.oci_archive(image_dir), ns=self.NS,
                     check=True, timeout=900)
        os.makedirs(self.runc_root, mode=0o700)

    def stop(self):
        self.ctd.stop()
        daemons.remove_cgroup_parent(self.NS)

    def ctr(self, *args, **kw):
        return self.ctd.ctr(*args, ns=self.NS, **kw)

    def run(self, name, argv, volume=None, io_uring=False):
        self.argv[name] = self.mounts(name, volume) + [realimage.IMAGE_NAME, name, *argv]
        self.ctr("run", "-d", "--runc-binary", ARCH_RUNC, "--runc-root", self.runc_root,
                 "--env", "ARCH_ENABLE=1", *self.argv[name], check=True)

    def mounts(self, name, volume):
        if not volume:
            return []
        host = os.path.join(self.workdir, "volumes", name)
        os.makedirs(host, exist_ok=True)
        return ["--mount", f"type=bind,src={host},dst={volume},options=rbind:rw"]

    def exec_fn(self, name):
        def run(argv, timeout):
            r = self.ctr("task", "exec", "--exec-id", "x" + secrets.token_hex(4), name, *argv,
                         timeout=timeout)
            return r.returncode, r.stdout, r.stderr
        return run

    def running(self, name):
        return self.ctd.task_status(self.NS, name) == "RUNNING"

    def checkpoint(self, name):
        r, s = timed([ARCHCTL, "container", "checkpoint", f"{self.NS}/{name}"], env=self.env)
        return r.returncode == 0, r.stdout + r.stderr, s

    def remove(self, name):
        if self.ctd.task_status(self.NS, name) not in (None, "STOPPED"):
            self.ctr("task", "kill", "-a", "-s", "SIGKILL", name)
        try:
            proc.wait_until(lambda: self.ctd.task_status(self.NS, name) in (None, "STOPPED"),
                            30, f"{name} to stop", interval=0.05)
        except proc.WaitTimeout:
            pass
        self.ctr("task", "delete", "-f", name)
        self.ctr("containers", "rm", name)

    def restore(self, name):
        r, s = timed(self.ctd.ctr_argv("run", "-d", "--runc-binary", ARCH_RUNC, "--runc-root",
                                       self.runc_root, "--env", "ARCH_ENABLE=1",
                                       *self.argv[name], ns=self.NS))
        restored = False
        try:
            with open(os.path.join(self.ctd.task_dir(self.NS), name, "log.json")) as f:
                restored = "restored from" in f.read()
        except OSError:
            pass
        if r.returncode == 0 and not restored:
            return False, "started fresh instead of restoring", s
        return r.returncode == 0, r.stdout + r.stderr, s

    def forget(self, name):
        self.remove(name)
        shutil.rmtree(os.path.join(self.store, self.NS, name), ignore_errors=True)


class Podman:
    label = "Podman"

    def __init__(self, workdir, network=None):
        self.workdir = workdir
        self.network = network  # None: Podman's default (CNI bridge: eth0 and lo)
        if network:
            self.label = f"Podman --network {network}"
        self.env = dict(os.environ, PATH=os.path.dirname(CRIU) + ":" + os.environ["PATH"])
        self.common = ["podman", "--root", os.path.join(workdir, "root"), "--runroot",
                       os.path.join(workdir, "run")]
        self.current = {}

    def podman(self, *args, timeout=300):
        return proc.run(self.common + list(args), env=self.env, timeout=timeout)

    def start(self, image_dir):
        r = self.podman("load", "-i", realimage.docker_archive(image_dir), timeout=900)
        assert r.returncode == 0, r.stderr

    def stop(self):
        self.podman("rm", "-af")
        self.podman("system", "reset", "-f")

    def run(self, name, argv, volume=None, io_uring=False):
        self.current[name] = name
        # Podman's default seccomp profile has no io_uring_* calls: fio could not even start.
        vol = ["--security-opt", "seccomp=unconfined"] if io_uring else []
        if volume:
            host = os.path.join(self.workdir, "volumes", name)
            os.makedirs(host, exist_ok=True)
            vol += ["-v", f"{host}:{volume}:rw"]
        net = ["--network", self.network] if self.network else []
        r = self.podman("run", "-d", "--name", name, *net, *vol,
                        "--ulimit", "nproc=4096:4096", "--ulimit", "nofile=20000:20000",
                        realimage.IMAGE_NAME, *argv)
        assert r.returncode == 0, r.stderr

    def exec_fn(self, name):
        def run(argv, timeout):
            r = self.podman("exec", self.current[name], *argv, timeout=timeout)
            return r.returncode, r.stdout, r.stderr
        return run

    def running(self, name):
        r = self.podman("inspect", "-f", "{{.State.Status}}", self.current[name])
        return r.stdout.strip() == "running"

    def export(self, name):
        return os.path.join(self.workdir, name + ".tar")

    def checkpoint(self, name):
        r, s = timed(self.common + ["container", "checkpoint", "--file-locks", "--export",
                                    self.export(name), self.current[name]], env=self.env)
        return r.returncode == 0, r.stdout + r.stderr, s

    def remove(self, name):
        self.podman("rm", "-f", self.current[name])

    def restore(self, name):
        new = f"{name}-r"
        r, s = timed(self.common + ["container", "restore", "--file-locks", "--import",
                                    self.export(name), "--name", new], env=self.env)
        if r.returncode == 0:
            self.current[name] = new
        return r.returncode == 0, r.stdout + r.stderr, s

    def forget(self, name):
        self.remove(name)
        try:
            os.unlink(self.export(name))
        except OSError:
            pass


def one(engine, w):
    """(ok, reason, checkpoint s, restore s) of workload w under engine."""
    name = f"rm-{w.name.replace('_', '-')}-{secrets.token_hex(2)}"
    ck = rs = None
    try:
        engine.run(name, w.argv(), w.volume, w.io_uring)
        ex = engine.exec_fn(name)
        proc.wait_until(lambda: w.ready(ex), 120, f"{w.name} ready", interval=0.2)
        state = w.prepare(ex)
        ok, text, ck = engine.checkpoint(name)
        if not ok:
            still = engine.running(name)
            reason = realworkloads.clean_error(text)
            if w.expect_dump_failure:
                named = w.expect_dump_failure in text
                return (still, f"dump refused, container "
                        f"{'kept running' if still else 'LOST'}, the error "
                        f"{'names' if named else 'does not name'} {w.expect_dump_failure}: "
                        f"{reason}", ck, None)
            return False, f"checkpoint failed: {reason}", ck, None
        if w.expect_dump_failure:
            return False, "checkpoint of an io_uring user succeeded", ck, None
        engine.remove(name)
        ok, text, rs = engine.restore(name)
        if not ok:
            return False, f"restore failed: {realworkloads.clean_error(text)}", ck, rs
        try:
            summary = w.verify(engine.exec_fn(name), state)
        except AssertionError as e:
            return False, "restored, state wrong: " + str(e).splitlines()[0][:200], ck, rs
        return True, summary, ck, rs
    except Exception as e:  # a harness problem is a failed cell, with its reason
        traceback.print_exc()
        return False, f"harness: {str(e).splitlines()[0][:200]}", ck, rs
    finally:
        engine.forget(name)


def cell(result):
    ok, reason, ck, rs = result
    times = " / ".join(f"{x:.2f}" if x is not None else "-" for x in (ck, rs))
    return f"{'ok' if ok else 'FAIL'} ({times} s): {reason}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default="arch,podman")
    ap.add_argument("--only", help="comma-separated workload names")
    ap.add_argument("--json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    # SIGTERM ends the run through the finally blocks: containers, daemons, temp dirs go.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    image_dir = realimage.build()
    ws = realworkloads.all_workloads()
    if args.only:
        ws = [w for w in ws if w.name in args.only.split(",")]
    workdir = tempfile.mkdtemp(prefix="arch-real-matrix-")
    makers = {"arch": Arch, "podman": Podman,
              "podman-nonet": lambda d: Podman(d, network="none")}
    engines = [makers[e](os.path.join(workdir, e)) for e in args.engines.split(",")]
    results = {}
    try:
        for e in engines:
            os.makedirs(e.workdir, exist_ok=True)
            e.start(image_dir)
        for w in ws:
            for e in engines:
                results.setdefault(w.name, {})[e.label] = one(e, w)
                print(f"{w.name:14s} {e.label:7s} {cell(results[w.name][e.label])}", flush=True)
    finally:
        for e in engines:
            e.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    labels = [e.label for e in engines]
    print("\n| workload | " + " | ".join(f"{x} (checkpoint / restore s)" for x in labels) + " |")
    print("|---|" + "---|" * len(labels))
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(cell(row[x]).replace("|", "/") for x in labels) + " |")
    for x in labels:
        print(f"{x}: {sum(row[x][0] for row in results.values())} of {len(results)} ok")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
