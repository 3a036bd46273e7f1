"""The benchmark suite's engines: one workload, checkpointed and restored three ways in
the same run, so that every row compares like with like.

  ArchEngine    containerd (private instance) running the container through arch-runc
                with ARCH_ENABLE=1; checkpoint = `archctl container checkpoint` (freeze,
                rootfs diff, CRIU dump, SHA-256 manifest, fsync'd commit, container ends);
                restore = `ctr run -d` of the same id (arch-runc verifies the checkpoint,
                applies the diff and runs `runc restore`, lazily with ARCH_LAZY_RESTORE=1).
  RuncEngine    runc alone on a plain bundle: `runc checkpoint` to an image dir (no
                fsync), `runc restore -d` (with --lazy-pages and a `criu lazy-pages`
                daemon for the lazy rows). The floor ARCH builds on.
  PodmanEngine  `podman container checkpoint --export F` / `podman container restore
                --import F`.

The workload (HOG_C) maps MIB MiB of anonymous memory, writes every page ("changed") or
none ("untouched"), then rewrites a counter in /out/beat every 10 ms (and, when changed,
flips a byte of one page per tick). /out is a host directory bind-mounted read-write, so
the harness sees readiness and progress without entering the container.

Times are wall-clock seconds of the engine's own command as a user would run it:
create-to-running for a restore is `ctr run -d` / `runc restore -d` / `podman restore`
until it returns with the task running.
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
sys.path.insert(0, HERE)
from archtest import daemons, image, proc  # noqa: E402

import benchlib  # noqa: E402

RUNC = "/usr/sbin/runc"
CRIU = os.path.join(os.environ.get("ARCH_CRIU_PREFIX") or "/opt/arch/criu", "bin", "criu")
BUILD = os.environ.get("ARCH_BUILD_DIR") or os.path.join(REPO, "build")
ARCH_RUNC = os.path.join(BUILD, "src", "shim", "arch-runc")
ARCHCTL = os.path.join(BUILD, "src", "cli", "archctl")

HOG_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char** argv) {
  if (argc != 4) return 2;
  size_t pages = (size_t)atol(argv[1]) * 256, n = pages * 4096;
  int touch = atoi(argv[2]);
  unsigned char* p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return 1;
  if (touch)
    for (size_t i = 0; i < pages; ++i) memset(p + i * 4096, (int)(i % 251) + 1, 4096);
  char path[4096];
  snprintf(path, sizeof path, "%s/beat", argv[3]);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return 1;
  for (unsigned long t = 1;; ++t) {
    if (touch) p[((t * 7919u) % pages) * 4096] ^= 1;
    char line[32];
    int len = snprintf(line, sizeof line, "%020lu\n", t);
    if (pwrite(fd, line, (size_t)len, 0) != len) return 1;
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}
"""


def run(argv, env=None, check=True, timeout=600):
    r = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr[-2000:]}")
    return r


def timed(argv, env=None):
    start = time.perf_counter()
    run(argv, env=env)
    return time.perf_counter() - start


def read_beat(out_dir):
    try:
        with open(os.path.join(out_dir, "beat")) as f:
            text = f.read().strip()
        return int(text) if text.isdigit() else 0
    except OSError:
        return 0


def wait_beat_after(out_dir, value, timeout=300):
    """Waits until the workload's counter passes `value`; returns the seconds it took."""
    start = time.perf_counter()
    proc.wait_until(lambda: read_beat(out_dir) > value, timeout, f"progress in {out_dir}",
                    interval=0.002)
    return time.perf_counter() - start


def evict(path):
    """Drops `path`'s files from the page cache (fsync first: only clean pages go), so the
    next read comes from the disk as on a node that did not write the checkpoint. Only
    these files are evicted, never the whole machine's cache."""
    walk = [(os.path.dirname(path), None, [os.path.basename(path)])] if os.path.isfile(path) \
        else os.walk(path)
    for root, _, files in walk:
        for name in files:
            full = os.path.join(root, name)
            try:
                fd = os.open(full, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def dir_bytes(path):
    """Bytes of the files under `path` (or of `path` itself when it is a file)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def criu_log_seconds(path):
    """CRIU's own duration of the run that wrote log `path` (its last "(SS.ssssss)" stamp)."""
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        m = re.match(r"\((\d+\.\d+)\)", line)
        if m:
            return float(m[1])
    return None


def lazy_daemons(fragment):
    """Pids of live `criu lazy-pages` processes whose command line contains `fragment`."""
    return daemons.pids_with_args("lazy-pages", fragment, substring=True)


def median(values):
    return statistics.median(values) if values else None


class Engine:
    """What every engine offers. `name` is unique per container within one engine."""

    label = ""

    def __init__(self, workdir, hog):
        self.workdir = workdir
        self.hog = hog
        self.at_checkpoint = {}  # name -> the workload's counter when it was checkpointed
        os.makedirs(workdir, exist_ok=True)

    def out_dir(self, name):
        path = os.path.join(self.workdir, "out", name)
        os.makedirs(path, exist_ok=True)
        return path

    def start_workload(self, name, mib, touch):
        """Starts the container; returns (seconds to running, seconds to ready) where
        ready means the memory is written and the counter ticks."""
        out = self.out_dir(name)
        for leftover in os.listdir(out):
            os.unlink(os.path.join(out, leftover))
        start = time.perf_counter()
        self._run(name, mib, touch)
        running = time.perf_counter() - start
        wait_beat_after(out, 0)
        return running, time.perf_counter() - start

    def checkpoint(self, name):
        """Checkpoints `name` (which ends it); returns the seconds it took."""
        seconds = self._checkpoint(name)
        self.at_checkpoint[name] = read_beat(self.out_dir(name))
        return seconds

    def restore(self, name, lazy=False):
        """Restores `name`; returns (create-to-running seconds, seconds until the counter
        moves on past its value at the checkpoint, counted from the same start)."""
        out = self.out_dir(name)
        # A previous restore of the same checkpoint counted on: put the counter back (in
        # place, same size: CRIU checks the open file's size) so progress means progress.
        before = self.at_checkpoint[name]
        with open(os.path.join(out, "beat"), "r+") as f:
            f.write(f"{before:020d}\n")
        start = time.perf_counter()
        self._restore(name, lazy)
        running = time.perf_counter() - start
        wait_beat_after(out, before)
        return running, time.perf_counter() - start

    def checkpoint_path(self, name):
        """Where the last checkpoint of `name` lives (for size and page-cache eviction)."""
        raise NotImplementedError

    def remove(self, name):
        raise NotImplementedError

    def forget_checkpoint(self, name):
        raise NotImplementedError


class ArchEngine(Engine):
    label = "ARCH"
    NS = "arch-bench"

    def __init__(self, workdir, hog):
        super().__init__(workdir, hog)
        etc = os.path.join(workdir, "etc")
        os.makedirs(etc, mode=0o755, exist_ok=True)
        self.conf = os.path.join(etc, "arch.conf")
        self.store = os.path.join(workdir, "store")
        with open(self.conf, "w") as f:
            f.write(f"[runtime]\nrunc = {RUNC}\ncriu = {CRIU}\n"
                    f"[log]\nlevel = info\nfile = {workdir}/arch.log\n"
                    f"[store]\npath = {self.store}\n[state]\ndir = {workdir}/state\n"
                    f"[keys]\ndir = {daemons.make_key_dir(os.path.join(etc, 'keys'))[0]}\n")
        os.chmod(self.conf, 0o644)
        self.env = dict(os.environ, ARCH_CONFIG=self.conf)
        self.ctd = daemons.Containerd(os.path.join(workdir, "containerd"),
                                      env={"ARCH_CONFIG": self.conf})
        self.runc_root = os.path.join(workdir, "ctr-runc-root")
        self.started = False

    def start(self):
        archives = image.build_archives(self.workdir)
        self.ctd.start()
        self.started = True
        self.ctd.ctr("images", "import", archives[0], ns=self.NS, check=True, timeout=120)
        os.makedirs(self.runc_root, mode=0o700, exist_ok=True)

    def stop(self):
        if self.started:
            self.ctd.stop()
            daemons.remove_cgroup_parent(self.NS)

    def _run_argv(self, name, mib, touch, env=()):
        argv = ["run", "-d", "--runc-binary", ARCH_RUNC, "--runc-root", self.runc_root,
                "--env", "ARCH_ENABLE=1"]
        for item in env:
            argv += ["--env", item]
        argv += ["--mount", f"type=bind,src={self.hog},dst=/hog,options=rbind:ro",
                 "--mount", f"type=bind,src={self.out_dir(name)},dst=/out,options=rbind:rw",
                 image.IMAGE_NAME, name, "/hog", str(mib), str(int(touch)), "/out"]
        return self.ctd.ctr_argv(*argv, ns=self.NS)

    def _run(self, name, mib, touch):
        self.spec = getattr(self, "spec", {})
        self.spec[name] = (mib, touch)
        run(self._run_argv(name, mib, touch))

    def _checkpoint(self, name):
        seconds = timed([ARCHCTL, "container", "checkpoint", f"{self.NS}/{name}"], env=self.env)
        self._delete(name)
        return seconds

    def _restore(self, name, lazy):
        mib, touch = self.spec[name]
        # lazy == "first": the pages hashed before the restore too (ARCH_LAZY_VERIFY=first),
        # as before ARCH's page server verified them chunk by chunk as it serves them.
        env = ("ARCH_LAZY_RESTORE=1",) if lazy else ()
        if lazy == "first":
            env += ("ARCH_LAZY_VERIFY=first",)
        run(self._run_argv(name, mib, touch, env=env))
        self.last_inner = self.restore_ms(name)
        work = os.path.join(self.bundle(name), "arch-restore", "lazy" if lazy else "")
        self.last_criu = criu_log_seconds(os.path.join(work, "restore.log"))

    def restore_ms(self, name):
        """arch-runc's own figure for its last restore of `name` (verify, rootfs diff, runc
        restore), from the "restored from ... in N ms" line it logs in the bundle's log.json."""
        try:
            with open(os.path.join(self.bundle(name), "log.json")) as f:
                lines = f.read().splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            m = re.search(r"restored from \S+ in (\d+) ms", line)
            if m:
                return int(m[1]) / 1000
        return None

    def bundle(self, name):
        return os.path.join(self.ctd.task_dir(self.NS), name)

    def lazy_done(self, name):
        """True once no lazy-pages daemon serves `name` any more."""
        return not lazy_daemons(os.path.join(self.bundle(name), "arch-restore"))

    def _delete(self, name):
        proc.wait_until(lambda: self.ctd.task_status(self.NS, name) in (None, "STOPPED"), 60,
                        f"{name} to stop")
        self.ctd.ctr("task", "delete", name, ns=self.NS)
        self.ctd.ctr("containers", "delete", name, ns=self.NS, check=True)

    def remove(self, name):
        if self.ctd.task_status(self.NS, name) not in (None, "STOPPED"):
            self.ctd.ctr("task", "kill", "-s", "SIGKILL", name, ns=self.NS)
        self._delete(name)

    def verify_seconds(self, name, cold, rounds=3):
        """Median seconds `archctl checkpoint list --verify` takes beyond the same without
        it; `cold`: the checkpoint's files evicted from the page cache before each."""
        times = []
        for _ in range(rounds):
            plain = timed([ARCHCTL, "checkpoint", "list"], env=self.env)
            if cold:
                evict(self.checkpoint_path(name))
            times.append(timed([ARCHCTL, "checkpoint", "list", "--verify"], env=self.env) - plain)
        return median(times)

    def checkpoint_path(self, name):
        key = os.path.join(self.store, self.NS, name)
        ckpts = sorted(d for d in os.listdir(key) if d.startswith("ckpt-"))
        return os.path.join(key, ckpts[-1])

    def forget_checkpoint(self, name):
        shutil.rmtree(os.path.join(self.store, self.NS, name), ignore_errors=True)


class RuncEngine(Engine):
    label = "runc alone"

    def __init__(self, workdir, hog):
        super().__init__(workdir, hog)
        self.root = os.path.join(workdir, "runc-root")
        self.bundles = {}

    def start(self):
        pass

    def stop(self):
        for name in list(self.bundles):
            run([RUNC, "--root", self.root, "delete", "-f", name], check=False)

    def _bundle(self, name, mib, touch):
        base = os.path.join(self.workdir, "bundles", name)
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        bundle = benchlib.make_bundle(base, ["/hog", str(mib), str(int(touch)), "/out"],
                                      {self.hog: "/hog"})
        cfg = os.path.join(bundle, "config.json")
        with open(cfg) as f:
            spec = json.load(f)
        os.makedirs(os.path.join(bundle, "rootfs", "out"), exist_ok=True)
        spec["mounts"].append({"destination": "/out", "type": "bind",
                               "source": self.out_dir(name), "options": ["rbind", "rw"]})
        with open(cfg, "w") as f:
            json.dump(spec, f)
        return bundle

    def _run(self, name, mib, touch):
        self.bundles[name] = self._bundle(name, mib, touch)
        # stdio on /dev/null: CRIU cannot dump a container holding a host pipe as stdio.
        subprocess.run([RUNC, "--root", self.root, "run", "-d", "--bundle", self.bundles[name],
                        name], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)

    def images(self, name):
        return os.path.join(self.workdir, "images", name)

    def _checkpoint(self, name):
        images = self.images(name)
        shutil.rmtree(images, ignore_errors=True)
        os.makedirs(images)
        return timed([RUNC, "--root", self.root, "--criu", CRIU, "checkpoint", "--image-path",
                       images, name])

    def _restore(self, name, lazy):
        argv = [RUNC, "--root", self.root, "--criu", CRIU, "restore", "-d", "--bundle",
                self.bundles[name], "--image-path", self.images(name)]
        if lazy:
            work = os.path.join(self.workdir, "lazy-work", name)
            shutil.rmtree(work, ignore_errors=True)
            os.makedirs(work)
            run([CRIU, "lazy-pages", "-D", self.images(name), "-W", work, "-o", "lazy.log",
                 "--daemon", "--pidfile", os.path.join(work, "pid")])
            argv += ["--lazy-pages", "--work-path", work]
        else:
            work = self.images(name)  # runc's default work path
        run(argv + [name])
        self.last_criu = criu_log_seconds(os.path.join(work, "restore.log"))

    def lazy_done(self, name):
        return not lazy_daemons(os.path.join(self.workdir, "lazy-work", name))

    def remove(self, name):
        run([RUNC, "--root", self.root, "delete", "-f", name], check=False)
        if not self.lazy_done(name):  # a daemon whose container went away early
            for pid in lazy_daemons(os.path.join(self.workdir, "lazy-work", name)):
                os.kill(pid, 9)

    def checkpoint_path(self, name):
        return self.images(name)

    def forget_checkpoint(self, name):
        shutil.rmtree(self.images(name), ignore_errors=True)


class PodmanEngine(Engine):
    label = "Podman"

    def __init__(self, workdir, hog):
        super().__init__(workdir, hog)
        self.env = dict(os.environ,
                        PATH=os.path.dirname(CRIU) + ":" + os.environ.get("PATH", ""))
        store = os.path.join(workdir, "podman")
        self.common = ["podman", "--root", os.path.join(store, "root"), "--runroot",
                       os.path.join(store, "run")]
        self.restores = {}  # name -> restores of its current checkpoint

    @staticmethod
    def available():
        return shutil.which("podman") is not None

    def podman(self, *args, check=True):
        return run(self.common + list(args), env=self.env, check=check)

    def start(self):
        archives = image.build_archives(self.workdir)
        self.podman("load", "-i", archives[1])

    def stop(self):
        self.podman("rm", "-af", check=False)
        self.podman("system", "reset", "-f", check=False)

    def _run(self, name, mib, touch):
        self.restores.pop(name, None)
        self.podman("run", "-d", "--name", name, "--network", "none",
                    "--ulimit", "nproc=4096:4096", "--ulimit", "nofile=1024:1024",
                    "-v", f"{self.hog}:/hog:ro", "-v", f"{self.out_dir(name)}:/out:rw",
                    image.IMAGE_NAME, "/hog", str(mib), str(int(touch)), "/out")

    def export(self, name):
        return os.path.join(self.workdir, f"{name}.tar.gz")

    def _checkpoint(self, name):
        seconds = timed(self.common + ["container", "checkpoint", "--export", self.export(name),
                                       name], env=self.env)
        self.podman("rm", "-f", name)
        return seconds

    def _restore(self, name, lazy):
        if lazy:
            raise ValueError("Podman has no lazy restore from an exported checkpoint")
        # An import keeps the container's ID, which a removed container's storage may
        # still hold: every restore after the first gets a new name (and so a new ID).
        self.restores[name] = self.restores.get(name, 0) + 1
        argv = ["container", "restore", "--import", self.export(name)]
        if self.restores[name] > 1:
            argv += ["--name", f"{name}-r{self.restores[name]}"]
        run(self.common + argv, env=self.env)

    def current(self, name):
        n = self.restores.get(name, 0)
        return name if n <= 1 else f"{name}-r{n}"

    def remove(self, name):
        self.podman("rm", "-f", self.current(name), check=False)

    def checkpoint_path(self, name):
        return self.export(name)

    def forget_checkpoint(self, name):
        self.restores.pop(name, None)
        try:
            os.unlink(self.export(name))
        except OSError:
            pass


def compile_hog(workdir):
    return benchlib.compile_static(workdir, "hog", HOG_C)


def engines(workdir, hog, with_podman=True):
    """The engines to compare, started (Podman only when installed)."""
    out = [ArchEngine(os.path.join(workdir, "arch"), hog),
           RuncEngine(os.path.join(workdir, "runc"), hog)]
    if with_podman and PodmanEngine.available():
        out.append(PodmanEngine(os.path.join(workdir, "podman"), hog))
    return out


# ------------------------------------------------------------------ the machine

def machine_description(workdir):
    """Model, cores, RAM, kernel, load, and the disk's sequential write rate measured now
    (256 MiB written with fdatasync into `workdir`)."""
    model = "unknown"
    for line in run(["lscpu"]).stdout.splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    path = os.path.join(workdir, "disk-rate.bin")
    block = os.urandom(1 << 20)
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(256):
            os.write(fd, block)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    write_rate = 256 / (time.perf_counter() - start)
    os.unlink(path)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / (1 << 20), 1),
        "kernel": os.uname().release,
        "disk_write_mib_s": round(write_rate),
        "load": open("/proc/loadavg").read().split()[:3],
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def describe(m):
    return (f"{m['when']}; {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, kernel "
            f"{m['kernel']}; disk sequential write (fdatasync) {m['disk_write_mib_s']} MiB/s; "
            f"load average {' '.join(m['load'])}")


def gnuplot(script):
    """Runs gnuplot on `script` (PNG output); a missing gnuplot is reported, not fatal."""
    if shutil.which("gnuplot") is None:
        print("gnuplot not installed: no plot written", file=sys.stderr)
        return
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
