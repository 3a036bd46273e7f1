"""The real-workload list (issue 13 item 8): real programs from Debian packages in the image
realimage.py builds, each given state before a checkpoint and checked by its own state after
the restore. Shared by the e2e suite (ARCH under containerd) and bench/real_matrix.py
(ARCH and Podman), so both run exactly the same list.

A workload is engine-neutral: it gets an `exec(argv, timeout) -> (rc, stdout, stderr)` that
runs a command inside the container, and its state lives in the container's own memory or
its writable layer (/data). Every program runs as root (issue 13 item 9: root here lacks
CAP_SYS_RESOURCE, so CRIU cannot dump a process of another uid). Servers listen on loopback
only: the checks run inside the container, so they need its loopback up after a restore.

Counters write `start <uuid>` once per process start, then 1, 2, 3 ...: a restored process
continues its sequence (same uuid, no repeat, no gap), a restarted one writes a second start
line, which the sequence check names.
"""

import dataclasses
import re
import secrets
import time
from typing import Callable, Optional

from . import workloads

START = 'echo "start $(cat /proc/sys/kernel/random/uuid)"'
# Debian's nginx-light, all in one foreground master run as root (worker as root too).
NGINX_CONF = """
user root;
daemon off;
worker_processes 1;
pid /data/nginx.pid;
error_log /data/nginx-error.log;
events { worker_connections 64; }
http {
  access_log off;
  server { listen 127.0.0.1:8080; root /data/www; }
}
"""
HTTP_GET = ("import sys, urllib.request\n"
            "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode(), end='')\n")
NUMPY = r"""
import numpy as np, time
N = 8 << 20   # 64 MiB of int64
a = np.arange(N, dtype=np.int64)
with open('/data/numpy.txt', 'a', buffering=1) as out:
    out.write('start ' + open('/proc/sys/kernel/random/uuid').read().strip() + '\n')
    t = 0
    while True:
        t += 1
        a += 1
        out.write(f'{t} {int(a.sum())}\n')
        time.sleep(0.05)
"""
NODE = r"""
const fs = require('fs');
const uuid = fs.readFileSync('/proc/sys/kernel/random/uuid', 'utf8').trim();
fs.appendFileSync('/data/node.txt', 'start ' + uuid + '\n');
let n = 0;
setInterval(() => { n += 1; fs.appendFileSync('/data/node.txt', n + '\n'); }, 50);
"""
JAVA = r"""
import java.io.*;
import java.nio.file.*;
import java.util.concurrent.atomic.AtomicLong;
public class Counter {
  public static void main(String[] a) throws Exception {
    String uuid = Files.readString(Path.of("/proc/sys/kernel/random/uuid")).trim();
    AtomicLong work = new AtomicLong();
    for (int i = 0; i < 8; i++) {
      Thread t = new Thread(() -> { while (true) { work.incrementAndGet();
        try { Thread.sleep(10); } catch (InterruptedException e) { return; } } });
      t.setDaemon(true); t.start();
    }
    try (PrintWriter out = new PrintWriter(new FileWriter("/data/java.txt", true), true)) {
      out.println("start " + uuid);
      for (long n = 1;; n++) { out.println(n); Thread.sleep(50); }
    }
  }
}
"""


def _ok(r, what):
    rc, out, err = r
    # The last line of stderr first (a Python traceback ends with the reason).
    last = (err.strip().splitlines() or [""])[-1]
    assert rc == 0, f"{what} exited {rc}: {last}\n{err.strip()[-800:]} {out.strip()[-400:]}"
    return out


def _counter_file(path, progress=10):
    """ready/prepare/verify for a workload writing a counter file at `path`."""

    def read(exec_):
        rc, out, _ = exec_(["cat", path], 30)
        if rc != 0:
            return None
        try:
            return workloads.parse_counter(out)
        except AssertionError:
            return None

    def ready(exec_):
        got = read(exec_)
        return got is not None and len(got[1]) >= 5

    def prepare(exec_):
        return read(exec_)

    def verify(exec_, before):
        uuid0, values0 = before
        deadline = time.monotonic() + 60
        while True:
            got = read(exec_)
            if got and len(got[1]) >= len(values0) + progress:
                break
            assert time.monotonic() < deadline, (
                f"{path} did not go on after the restore: {got and got[1][-5:]} "
                f"(had {len(values0)} before)")
            time.sleep(0.1)
        uuid, values = got
        workloads.check_sequence(values, f"{path} after the restore")
        assert uuid == uuid0, f"{path}: the program started again instead of resuming"
        return f"{len(values0)} before, {len(values)} after"

    return ready, prepare, verify


@dataclasses.dataclass
class Workload:
    name: str
    script: str                       # bash script run as the container's process
    ready: Callable                   # ready(exec) -> bool
    prepare: Callable                 # prepare(exec) -> state (before the checkpoint)
    verify: Callable                  # verify(exec, state) -> summary; asserts the state
    files: dict = dataclasses.field(default_factory=dict)  # /path -> text, made before start
    expect_dump_failure: Optional[str] = None  # a word the failure must name (io_uring)
    volume: Optional[str] = None      # a container path where the engine mounts a host dir
    io_uring: bool = False            # needs io_uring_setup (Podman's seccomp profile refuses it)
    xfail_arch: Optional[str] = None  # why ARCH on main does not get it right (issue item)
    xfail_strict: bool = True         # False: fails only some of the time (by chance)

    def argv(self):
        made = "".join(f"cat > {p} <<'ARCH_EOF'\n{t}\nARCH_EOF\n" for p, t in self.files.items())
        return ["bash", "-c", "mkdir -p /data/www\n" + made + self.script]


# ------------------------------------------------------------------ servers

def _redis():
    keys = {f"key:{i}": secrets.token_hex(8) for i in range(200)}

    def cli(*args):
        return ["redis-cli", "-h", "127.0.0.1", "-p", "6379", *args]

    def ready(exec_):
        return exec_(cli("ping"), 10)[1].strip() == "PONG"

    def prepare(exec_):
        assert _ok(exec_(cli("mset", *[x for kv in keys.items() for x in kv]), 10),
                   "redis-cli mset").strip() == "OK"
        _ok(exec_(cli("incrby", "counter", "41"), 10), "redis-cli incrby")
        return dict(keys)

    def verify(exec_, before):
        assert _ok(exec_(cli("incr", "counter"), 10), "redis-cli incr").strip() == "42"
        got = _ok(exec_(cli("mget", *before), 10), "redis-cli mget").split()
        want = list(before.values())
        wrong = [k for k, a, b in zip(before, got, want) if a != b]
        assert len(got) == len(want) and not wrong, (
            f"redis after the restore: {len(got)} values for {len(want)} keys, wrong: {wrong[:5]}")
        return f"{len(before)} keys, counter 42"

    # No RDB, no AOF: the keys can come back only from the restored memory.
    return Workload("redis", "exec redis-server --bind 127.0.0.1 --port 6379 --save '' "
                    "--appendonly no --protected-mode no", ready, prepare, verify)


def _http_check(url, body_path):
    def ready(exec_):
        return exec_(["python3", "-c", HTTP_GET, url], 10)[0] == 0

    def prepare(exec_):
        token = secrets.token_hex(16)
        _ok(exec_(["bash", "-c", f"echo {token} > {body_path}"], 10), "write page")
        got = _ok(exec_(["python3", "-c", HTTP_GET, url], 10), "GET before").strip()
        assert got == token, (got, token)
        pids = _ok(exec_(["bash", "-c", "echo $(pgrep -o -x nginx || pgrep -o -f http.server)"],
                         10), "pgrep")
        return token, pids.strip()

    def verify(exec_, before):
        token, pids = before
        got = _ok(exec_(["python3", "-c", HTTP_GET, url], 10), f"GET {url} after the restore")
        assert got.strip() == token, (got, token)
        now = _ok(exec_(["bash", "-c", "echo $(pgrep -o -x nginx || pgrep -o -f http.server)"],
                        10), "pgrep").strip()
        assert now == pids, f"the server is a new process ({now}, was {pids})"
        return "served the page"

    return ready, prepare, verify


def _nginx():
    r, p, v = _http_check("http://127.0.0.1:8080/index.html", "/data/www/index.html")
    return Workload("nginx", "echo starting > /data/www/index.html\n"
                    "exec nginx -c /data/nginx.conf", r, p, v,
                    files={"/data/nginx.conf": NGINX_CONF})


def _http_server():
    r, p, v = _http_check("http://127.0.0.1:8000/index.html", "/data/www/index.html")
    return Workload("python-http", "echo starting > /data/www/index.html\n"
                    "exec python3 -m http.server 8000 --bind 127.0.0.1 --directory /data/www",
                    r, p, v)


# ------------------------------------------------------------------ compute

def _numpy():
    def read(exec_):
        rc, out, _ = exec_(["cat", "/data/numpy.txt"], 30)
        lines = workloads.complete_lines(out) if rc == 0 else []
        if not lines or not lines[0].startswith("start "):
            return None
        return lines[0], [tuple(int(x) for x in line.split()) for line in lines[1:]]

    n = 8 << 20
    base = n * (n - 1) // 2

    def check(rows):
        for i, (t, s) in enumerate(rows):
            assert t == i + 1, f"numpy tick #{i + 1} is {t} (restart, repeat or gap)"
            assert s == base + t * n, f"numpy checksum at tick {t} is {s}, expected {base + t * n}"

    def ready(exec_):
        got = read(exec_)
        return got is not None and len(got[1]) >= 5

    def prepare(exec_):
        got = read(exec_)
        check(got[1])
        return got

    def verify(exec_, before):
        deadline = time.monotonic() + 60
        while True:
            got = read(exec_)
            if got and len(got[1]) >= len(before[1]) + 10:
                break
            assert time.monotonic() < deadline, "numpy did not go on after the restore"
            time.sleep(0.1)
        assert got[0] == before[0], "numpy started again instead of resuming"
        check(got[1])
        return f"64 MiB array, ticks {len(before[1])} -> {len(got[1])}"

    return Workload("numpy", "exec python3 -u -c \"$(cat /data/numpy.py)\"", ready, prepare,
                    verify, files={"/data/numpy.py": NUMPY})


def _node():
    r, p, v = _counter_file("/data/node.txt")
    return Workload("nodejs", "exec node /data/counter.js", r, p, v,
                    files={"/data/counter.js": NODE})


def _java():
    r, p, v = _counter_file("/data/java.txt")
    return Workload("jvm", "cd /data && exec java -Xmx64m Counter.java", r, p, v,
                    files={"/data/Counter.java": JAVA})


# ------------------------------------------------------------------ data and processes

def _sqlite(volume):
    """sqlite3 inserting rows. With `volume`, the database lives on a host directory
    mounted into the container (what a database's data usually is); without, in the
    container's writable layer, which a restore re-creates: new inode numbers, and SQLite,
    which remembers its database's inode, then refuses to write (SQLITE_READONLY_DBMOVED)."""
    db = ("/db" if volume else "/data") + "/rows.db"

    def sql(exec_, query):
        return exec_(["sqlite3", "-cmd", ".timeout 10000", db, query], 30)

    def rows(exec_):
        rc, out, _ = sql(exec_, "select count(*), count(distinct n), coalesce(min(n),0), "
                         "coalesce(max(n),0), count(distinct uuid) from t")
        if rc != 0:
            return None
        return tuple(int(x) for x in out.strip().split("|"))

    def check(got, what, exec_=None):
        count, distinct, lo, hi, uuids = got
        if not (count == distinct == hi and lo == 1) and exec_:
            ns = [int(x) for x in sql(exec_, "select n from t order by rowid")[1].split()]
            missing = sorted(set(range(1, max(ns) + 1)) - set(ns))
            repeated = sorted({n for n in ns if ns.count(n) > 1})
            raise AssertionError(f"sqlite rows {what}: {got} (count, distinct, min, max, "
                                 f"writers): missing {missing[:10]}, repeated {repeated[:10]}, "
                                 f"in insertion order: {ns}")
        assert count == distinct == hi and lo == 1, f"sqlite rows {what}: {got} (gap or repeat)"
        assert uuids == 1, f"sqlite rows {what}: written by {uuids} writer processes"

    def ready(exec_):
        got = rows(exec_)
        return got is not None and got[0] >= 5

    def inode(exec_):
        return exec_(["stat", "-c", "%d:%i", db], 10)[1].strip()

    def prepare(exec_):
        got = rows(exec_)
        check(got, "before the checkpoint", exec_)
        return got + (inode(exec_),)

    def verify(exec_, state):
        before, ino = state[:5], state[5]
        deadline = time.monotonic() + 60
        while True:
            got = rows(exec_)
            if got and got[0] >= before[0] + 10:
                break
            assert time.monotonic() < deadline, (
                f"no more rows after the restore: {got} (dev:inode of {db} at the checkpoint "
                f"{ino}, now {inode(exec_)})")
            time.sleep(0.1)
        check(got, "after the restore", exec_)
        return f"rows {before[0]} -> {got[0]}"

    # One long-lived sqlite3 (the Debian CLI) holds the database open and inserts what a
    # bash producer writes into its stdin, one autocommit insert every 50 ms. Writer and
    # readers wait for each other's locks (.timeout): without it an insert that meets a
    # reader fails with "database is locked" and its row is lost, which is no restore's doing.
    script = (f"sqlite3 {db} 'create table t(n integer, uuid text)'\n"
              "u=$(cat /proc/sys/kernel/random/uuid); i=0\n"
              "(echo '.timeout 10000'; echo 'pragma synchronous=off;'; while :; do i=$((i+1)); "
              "echo \"insert into t values($i, '$u');\"; sleep 0.05; done) | "
              f"sqlite3 {db}")
    if volume:
        # A row written between the dump and the container's end would be inserted twice
        # after the restore (seen in CI before every task was killed while frozen).
        return Workload("sqlite", script, ready, prepare, verify, volume="/db")
    return Workload("sqlite-rootfs", script, ready, prepare, verify,
                    xfail_arch="not in issue 13: the restored writable layer has new inode "
                    "numbers and SQLite refuses to write a database whose inode changed "
                    "(SQLITE_READONLY_DBMOVED); passes when the file happens to get its old "
                    "inode number back", xfail_strict=False)


def _pipeline():
    r, p, v = _counter_file("/data/pipe.txt")
    script = (f"{START} > /data/pipe.txt\n"
              "sleep 100000 &\n"
              "(while :; do sleep 1; done) &\n"
              "(i=0; while :; do i=$((i+1)); echo $i; sleep 0.02; done) | "
              "(while read n; do echo $n | cat >> /data/pipe.txt; done) &\n"
              "wait\n")
    return Workload("pipeline", script, r, p, v)


def _flock():
    r, p, v = _counter_file("/data/flock.txt")

    def verify(exec_, before):
        summary = v(exec_, before)
        rc, out, err = exec_(["flock", "-n", "/data/lock", "true"], 10)
        assert rc == 1, f"after the restore nobody holds the flock on /data/lock (flock -n: {rc})"
        locks = _ok(exec_(["cat", "/proc/locks"], 10), "cat /proc/locks")
        assert "FLOCK" in locks, locks
        return summary + ", lock held"

    def prepare(exec_):
        rc, _, _ = exec_(["flock", "-n", "/data/lock", "true"], 10)
        assert rc == 1, "the workload does not hold its flock before the checkpoint"
        return p(exec_)

    script = (f"touch /data/lock\nexec flock /data/lock bash -c '{START} > /data/flock.txt; i=0; "
              "while :; do i=$((i+1)); echo $i >> /data/flock.txt; sleep 0.05; done'")
    return Workload("flock", script, r, prepare, verify)


def _deleted_file():
    r, p, v = _counter_file("/data/ghost.txt")

    def prepare(exec_):
        sha = _ok(exec_(["cat", "/data/ghost.sha"], 10), "cat ghost.sha").split()[0]
        return sha, p(exec_)

    def verify(exec_, before):
        sha, counter = before
        summary = v(exec_, counter)
        now = _ok(exec_(["sha256sum", "/proc/1/fd/3"], 30), "sha256sum").split()[0]
        assert now == sha, "the deleted file's content changed across the restore"
        return summary + ", 32 MiB deleted file intact"

    script = ("exec 3<>/data/ghost.bin; head -c 32M /dev/urandom >&3; rm /data/ghost.bin\n"
              "sha256sum /proc/self/fd/3 > /data/ghost.sha\n"
              f"{START} > /data/ghost.txt; i=0\n"
              "while :; do i=$((i+1)); echo $i >> /data/ghost.txt; sleep 0.05; done")
    return Workload("deleted-file", script, r, prepare, verify)


def _io_uring():
    def ready(exec_):
        # Ready once a fio process holds its ring (fio lays out the file first: a dump then
        # would find no io_uring at all).
        rc, out, _ = exec_(["bash", "-c", "pgrep -x fio >/dev/null && "
                            "ls -l /proc/[0-9]*/fd 2>/dev/null | grep -q 'io_uring'"], 10)
        return rc == 0

    def prepare(exec_):
        return None

    def verify(exec_, before):
        raise AssertionError("io_uring cannot be checkpointed (CRIU has no support)")

    script = ("exec fio --name=uring --ioengine=io_uring --filename=/data/fio.bin --size=8M "
              "--rw=randrw --bs=4k --time_based --runtime=100000 --rate_iops=50 "
              "--output=/data/fio.out")
    return Workload("io_uring", script, ready, prepare, verify, expect_dump_failure="io_uring",
                    io_uring=True)


def all_workloads(java=True):
    out = [_redis(), _nginx(), _http_server(), _numpy(), _node()]
    if java:
        out.append(_java())
    out += [_sqlite(True), _sqlite(False), _pipeline(), _flock(), _deleted_file(), _io_uring()]
    return out


def by_name(name):
    for w in all_workloads():
        if w.name == name:
            return w
    raise KeyError(name)


GENERIC = re.compile(r"Dumping FAILED|Restoring FAILED|failed with -1|RLIMIT_NOFILE|"
                     r"Hardware breakpoints")


def clean_error(text):
    """The most telling line of a failure, for a matrix cell: CRIU's first specific error
    line when there is one, else the last line naming an error."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "Error (" in line and not GENERIC.search(line):
            return line[:200]
    for line in reversed(lines):
        if re.search(r"error|fail|unsupported|cannot|can't|unknown", line, re.I):
            return line[:200]
    return lines[-1][:200] if lines else ""
