"""Process jobs as the tests run them: a "node" is one archd with its own config, state
directory and checkpoint store (two of them on one machine stand for two machines), driven
through the real archctl; plus the Python, C and shell workloads whose output shows whether
their state continued across a checkpoint and restore.
"""

import dataclasses
import json
import os
import signal
import subprocess

from . import proc
from .archd import Archd

# A Python job: a child process feeds numbers through a pipe to its parent, which appends
# "<n> <JOB_TAG> <cwd>" to count.txt through a file it keeps open and prints "tick <n>".
PY_JOB = r'''
import os, sys, time
out = open("count.txt", "a", buffering=1)
r, w = os.pipe()
if os.fork() == 0:
    os.close(r)
    i = 0
    while True:
        os.write(w, b"%d\n" % i)
        i += 1
        time.sleep(0.02)
os.close(w)
tag = os.environ["JOB_TAG"]
for line in os.fdopen(r):
    n = line.strip()
    out.write(f"{n} {tag} {os.getcwd()}\n")
    print("tick", n, flush=True)
'''

# A C job: a counter in memory, appended to count.txt through an open fd; with an argument,
# it also keeps that file mapped (MAP_SHARED) and writes into it.
C_JOB = r'''
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char** argv) {
  int fd = open("count.txt", O_WRONLY | O_CREAT | O_APPEND, 0644);
  volatile char* map = NULL;
  if (argc > 1) {
    int m = open(argv[1], O_RDWR);
    map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
    if (map == MAP_FAILED) return 2;
    close(m);
  }
  const char* tag = getenv("JOB_TAG");
  char cwd[512], buf[1024];
  if (!getcwd(cwd, sizeof cwd)) return 3;
  struct timespec ts = {0, 20000000};
  for (long i = 0;; i++) {
    int n = snprintf(buf, sizeof buf, "%ld %s %s\n", i, tag ? tag : "-", cwd);
    if (write(fd, buf, (size_t)n) != n) return 4;
    if (map) map[i % 4096] = (char)i;
    printf("tick %ld\n", i);
    fflush(stdout);
    nanosleep(&ts, NULL);
  }
}
'''

# A shell job: sh plus a `sleep` child at any time; count.txt opened per line.
SH_JOB = ('i=0; while :; do echo "$i $JOB_TAG $PWD" >> count.txt; echo tick $i; '
          'i=$((i+1)); sleep 0.03; done')


def compile_c_job(directory):
    src = os.path.join(directory, "cjob.c")
    out = os.path.join(directory, "cjob")
    with open(src, "w") as f:
        f.write(C_JOB)
    proc.run(["cc", "-O2", "-o", out, src], check=True, timeout=120)
    return out


def counts(path):
    """The numbers (first fields) in count.txt."""
    try:
        with open(path) as f:
            return [int(line.split()[0]) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def lines(path):
    try:
        with open(path) as f:
            return [line.split() for line in f if line.strip()]
    except FileNotFoundError:
        return []


def assert_consecutive(path, at_least):
    n = counts(path)
    assert len(n) >= at_least, f"{path}: only {len(n)} lines"
    gaps = [(i, v) for i, v in enumerate(n) if v != i]
    assert not gaps, f"{path}: numbers are not 0..{len(n) - 1} in order (first bad: {gaps[:3]})"
    return n


def wait_count(path, n, timeout=30):
    return proc.wait_until(lambda: len(counts(path)) >= n, timeout,
                           f"{path} to reach {n} lines", interval=0.02)


def pid_gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


class Node:
    """One archd (own state dir, store and socket) and archctl pointed at it."""

    def __init__(self, archd_binary, archctl_binary, base, node_config, jobs_section=""):
        node = dataclasses.replace(node_config, store=os.path.join(base, "store"),
                                   state=os.path.join(base, "arch-state"))
        self.archd = Archd(archd_binary, base, node, parallel=0, metrics=False)  # 0: the default
        self.archctl_binary = archctl_binary
        self.store = node.store
        self.jobs_dir = os.path.join(base, "agent", "jobs")
        if jobs_section:
            with open(self.archd.config, "a") as f:
                f.write("[jobs]\n" + jobs_section)

    def start(self):
        self.archd.start()
        return self

    def ctl(self, *args, timeout=120, check=True):
        r = proc.run([self.archctl_binary, *args], timeout=timeout, env=self.archd.env())
        if check and r.returncode != 0:
            raise AssertionError(f"archctl {' '.join(args)} exited {r.returncode}\n"
                                 f"stdout: {r.stdout}\nstderr: {r.stderr}\n"
                                 f"archd: {self.archd.log_text()[-3000:]}")
        return r

    def ctl_async(self, *args):
        return subprocess.Popen([self.archctl_binary, *args], env=self.archd.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)

    def run_job(self, workdir, *argv, name=None, env_file=None):
        args = ["job", "run", "--dir", workdir]
        if name:
            args += ["--name", name]
        if env_file:
            args += ["--env-file", env_file]
        return self.ctl(*args, "--", *argv).stdout.strip()

    def job(self, job_id):
        return self.jobs().get(job_id)

    def jobs(self):
        return {j["id"]: j for j in json.loads(self.ctl("job", "ps", "-o", "json").stdout)["jobs"]}

    def checkpoint(self, job_id, *flags):
        return json.loads(self.ctl("job", "checkpoint", job_id, "-o", "json", *flags).stdout)

    def restore(self, *args):
        return json.loads(self.ctl("job", "restore", *args, "-o", "json").stdout)

    def logs(self, job_id):
        return self.ctl("job", "logs", job_id).stdout

    def wait_state(self, job_id, state, timeout=20):
        return proc.wait_until(lambda: (self.job(job_id) or {}).get("state") == state and
                               self.job(job_id), timeout, f"job {job_id} to be {state}",
                               interval=0.05)

    def cleanup(self):
        """Every job killed and forgotten, then archd stopped (by pid). Should archd not
        answer, its children (the jobs' session leaders) are killed by process group."""
        if self.archd.proc is None or self.archd.proc.poll() is not None:
            return
        try:
            try:
                self.archd.call("POST", "/v1/node/undrain")
                for job_id in self.jobs():
                    self.ctl("job", "rm", "--force", job_id, check=False)
            finally:
                for pid in children(self.archd.proc.pid):
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
        finally:
            assert self.archd.stop() == 0, self.archd.log_text()


def children(pid):
    """The pids of `pid`'s children (from /proc)."""
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except FileNotFoundError:
        pass
    return out
