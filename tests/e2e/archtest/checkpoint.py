"""Driving ARCH checkpoints end to end: archctl, ARCH-enabled containers under containerd
(ctr) and Docker, the evidence ARCH leaves (log.json, restore.log, dump.log, the node
log, the store), and a cleanup that leaves nothing behind.

A restored container's processes are children of CRIU's restore, not of the test, so
every container is removed through its engine (ctr / docker), and the teardown then
kills, by pid, anything still in the containers' cgroups (thawing a frozen one first)
and removes those cgroups, and removes the keys the test created from the store.
"""

import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tarfile
import time

from . import proc, runtime_log

CGROUP_ROOT = "/sys/fs/cgroup"


def new_id(label):
    return f"ck-{label}-{secrets.token_hex(3)}"


# ------------------------------------------------------------------ archctl

class Archctl:
    """archctl with the session's node config (ARCH_CONFIG)."""

    def __init__(self, path, config):
        self.path = path
        self.config = config

    def env(self):
        return dict(os.environ, ARCH_CONFIG=self.config)

    def argv(self, *args):
        return [self.path, *args]

    def run(self, *args, timeout=120):
        return proc.run(self.argv(*args), timeout=timeout, env=self.env())

    def json(self, *args, timeout=120, ok=(0,)):
        r = self.run(*args, "-o", "json", timeout=timeout)
        assert r.returncode in ok, (f"archctl {' '.join(args)} exited {r.returncode}\n"
                                    f"stdout: {r.stdout}\nstderr: {r.stderr}")
        try:
            return json.loads(r.stdout)
        except ValueError:
            raise AssertionError(f"archctl {' '.join(args)} -o json printed no JSON: "
                                 f"{r.stdout!r} (stderr {r.stderr!r})")

    def popen(self, *args):
        return subprocess.Popen(self.argv(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.env(), text=True)

    def checkpoints(self, ns=None, key=None):
        """`archctl checkpoint list -o json`, optionally only one namespace/key."""
        return [c for c in self.json("checkpoint", "list")
                if (ns is None or c["namespace"] == ns) and (key is None or c["key"] == key)]


# ------------------------------------------------------------------ evidence

def read_text(path, limit=200_000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-limit:]
    except OSError as e:
        return f"<{path}: {e.strerror}>"


def criu_log_excerpt(path, tail=12):
    """The Error/Warn lines of a CRIU log and its last lines."""
    text = read_text(path)
    lines = text.splitlines()
    errors = [line for line in lines if "Error" in line or "Warn" in line]
    return "\n".join(errors[-20:] + ["..."] + lines[-tail:])


def json_lines(text):
    """JSON lines of a log (an unparsable line kept as {"unparsable": line})."""
    return runtime_log.parse_json_lines(text)


def messages(records, level=None):
    return [str(r.get("msg", r.get("unparsable", ""))) for r in records
            if level is None or r.get("level") == level]


# ------------------------------------------------------------------ processes and cgroups

def descendants(pid):
    """Pids of every live descendant of pid (from /proc/*/stat ppid links)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids, timeout):
    """Waits until none of pids is alive; returns those still alive after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)


def kill9_and_check_children(p, timeout, what):
    """kill -9 of the running archctl `p` (a Popen). It is stopped first so that no child
    escapes the snapshot of its descendants; those children (runc, CRIU) must then finish
    by themselves within `timeout`. Any that hang are killed and the test fails."""
    os.kill(p.pid, signal.SIGSTOP)
    orphans = descendants(p.pid)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=10)
    hung = wait_gone(orphans, timeout)
    for pid in hung:
        os.kill(pid, signal.SIGKILL)
    assert not hung, f"{what}'s children did not finish after it was killed: {hung}"


def cgroup_hierarchies():
    """Each mounted hierarchy under /sys/fs/cgroup once (cpu and cpuacct may be one)."""
    seen, out = set(), []
    try:
        names = sorted(os.listdir(CGROUP_ROOT))
    except OSError:
        return out
    for name in names:
        path = os.path.realpath(os.path.join(CGROUP_ROOT, name))
        if os.path.isdir(path) and path not in seen:
            seen.add(path)
            out.append(path)
    if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.procs")):  # pure cgroup2
        out.append(CGROUP_ROOT)
    return out


def cgroup_dirs(parent, name):
    return [d for d in (os.path.join(h, parent, name) for h in cgroup_hierarchies())
            if os.path.isdir(d)]


def cgroup_pids(path):
    pids = set()
    for root, _dirs, _files in os.walk(path):
        try:
            with open(os.path.join(root, "cgroup.procs")) as f:
                pids.update(int(x) for x in f.read().split())
        except OSError:
            pass
    return pids


def _thaw(path):
    for root, _dirs, _files in os.walk(path):
        for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            try:
                with open(os.path.join(root, name), "w") as f:
                    f.write(value)
            except OSError:
                pass


def sweep_cgroup(parent, name):
    """Kills (by pid) every process left in cgroup /parent/name of every hierarchy, thawing
    it first, and removes the cgroups. Returns {pid: cmdline} of the processes found."""
    found = {}
    dirs = cgroup_dirs(parent, name)
    for d in dirs:
        for pid in cgroup_pids(d):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    found[pid] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                found[pid] = "?"
    if found:
        for d in dirs:
            _thaw(d)
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_gone(list(found), 10)
    for d in dirs:
        for root, subdirs, _files in sorted(os.walk(d), key=lambda w: -len(w[0])):
            try:
                os.rmdir(root)
            except OSError:
                pass
    return found


# ------------------------------------------------------------------ the store

def store_key_dir(store, ns, key):
    return os.path.join(store, ns, key)


def committed_dirs(store, ns, key):
    try:
        names = os.listdir(store_key_dir(store, ns, key))
    except FileNotFoundError:
        return []
    return sorted(os.path.join(store, ns, key, n) for n in names if n.startswith("ckpt-"))


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _diff_tar(checkpoint_dir):
    """The checkpoint's rootfs-diff.tar, opened whether plain or zstd-compressed
    ([checkpoint] rootfs_compression = zstd; Python's tarfile has no zstd, the zstd CLI does)."""
    with open(os.path.join(checkpoint_dir, "rootfs-diff.tar"), "rb") as f:
        data = f.read()
    if data.startswith(ZSTD_MAGIC):
        data = subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
    return tarfile.open(fileobj=io.BytesIO(data))


def diff_member(checkpoint_dir, path):
    """A file's bytes as the checkpoint's rootfs diff holds it (None when absent)."""
    with _diff_tar(checkpoint_dir) as tar:
        for member in tar.getmembers():
            name = member.name[2:] if member.name.startswith("./") else member.name
            if name.lstrip("/") == path.lstrip("/") and member.isfile():
                return tar.extractfile(member).read()
    return None


def diff_members(checkpoint_dir):
    """The paths (without a leading "./") in the checkpoint's rootfs diff."""
    with _diff_tar(checkpoint_dir) as tar:
        return [m.name[2:] if m.name.startswith("./") else m.name for m in tar.getmembers()]


def remove_key(store, ns, key):
    path = store_key_dir(store, ns, key)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------ engines

class Containers:
    """What the tests do with a container, whatever the engine; see CtrContainers and
    DockerContainers. `ref` is what the engine calls the container (ctr id, docker name)."""

    ns = None

    def __init__(self, archctl, node):
        self.archctl = archctl
        self.node = node  # conftest.NodeConfig
        self.created = {}  # ref -> store (base) its key lives in

    # ---- evidence shown when an assertion fails
    def output_path(self, ref):
        return None

    def diagnostics(self, ref, checkpoint_dir=None):
        parts = []
        output = self.output_path(ref)
        if output and os.path.exists(output):
            parts.append(f"--- the container's output\n{read_text(output, 3000)}")
        bundle = self.bundle(ref)
        if bundle:
            parts.append(f"--- {bundle}/log.json\n{read_text(os.path.join(bundle, 'log.json'))}")
            restore_log = os.path.join(bundle, "arch-restore", "restore.log")
            if os.path.exists(restore_log):
                parts.append(f"--- {restore_log} (excerpt)\n{criu_log_excerpt(restore_log)}")
        if checkpoint_dir:
            dump_log = os.path.join(checkpoint_dir, "criu", "dump.log")
            parts.append(f"--- {dump_log} (excerpt)\n{criu_log_excerpt(dump_log)}")
        if os.path.exists(self.node.log_file):
            parts.append(f"--- node log (tail)\n{read_text(self.node.log_file, 6000)}")
        return "\n".join(parts)

    def checkpoint(self, ref, extra=(), timeout=120):
        """`archctl container checkpoint NS/ID -o json`; asserts success and returns the JSON."""
        r = self.archctl.run("container", "checkpoint", f"{self.ns}/{self.id_of(ref)}", *extra,
                             "-o", "json", timeout=timeout)
        assert r.returncode == 0, (f"archctl container checkpoint {ref} exited {r.returncode}\n"
                                   f"stdout: {r.stdout}\nstderr: {r.stderr}\n"
                                   f"{self.diagnostics(ref)}")
        out = json.loads(r.stdout)
        assert os.path.isfile(os.path.join(out["checkpoint"], "manifest.json")), out
        return out

    def checkpoints(self, ref):
        return self.archctl.checkpoints(self.ns, self.id_of(ref))

    def log_messages(self, ref, level=None):
        """The messages in the container's current bundle's log.json."""
        bundle = self.bundle(ref)
        assert bundle, f"{ref} has no bundle"
        return messages(json_lines(read_text(os.path.join(bundle, "log.json"))), level)

    def assert_restored(self, ref, ckpt):
        """The container's current task was restored from `ckpt` (arch-runc's log.json says so)."""
        assert any("restored from " + ckpt in m for m in self.log_messages(ref)), (
            f"{ref} was not restored from {ckpt}\n{self.diagnostics(ref, ckpt)}")

    def wait_lines(self, ref, path, minimum, parse, timeout=30):
        """Waits until parse(file text) holds at least `minimum` values; returns the parse."""
        last = [None]

        def enough():
            text = self.read(ref, path)
            if text is None:
                return False
            try:
                parsed = parse(text)
            except AssertionError:
                return False  # the start line is not written yet
            last[0] = parsed
            return parsed if len(parsed[1]) >= minimum else False

        try:
            return proc.wait_until(enough, timeout, f"{ref}:{path} to hold {minimum} values",
                                   interval=0.05)
        except proc.WaitTimeout as e:
            raise AssertionError(f"{e}; last read: {last[0]!r}\n{self.diagnostics(ref)}")

    def sweep(self):
        """Kills and removes whatever the containers left in their cgroups; returns it."""
        left = {}
        for ref in self.created:
            left.update(sweep_cgroup(self.cgroup_parent(), self.cgroup_name(ref)))
        return left

    def remove_keys(self):
        for ref, store in self.created.items():
            key = self.key_of(ref)
            if key:
                remove_key(store, self.ns, key)


class CtrContainers(Containers):
    """ARCH-enabled containers on the session's private containerd, through ctr."""

    def __init__(self, env, image, arch_runc, archctl, node):
        super().__init__(archctl, node)
        self.env = env  # conftest.CtrEnv
        self.ns = env.ns
        self.image = image
        self.arch_runc = arch_runc
        self.binds = {}  # cid -> (host directory, container path): a volume

    def id_of(self, ref):
        return ref

    def key_of(self, ref):
        return ref

    def cgroup_parent(self):
        return self.ns

    def cgroup_name(self, ref):
        return ref

    def bundle(self, ref):
        path = os.path.join(self.env.ctd.task_dir(self.ns), ref)
        return path if os.path.isdir(path) else None

    def output_path(self, cid):
        """Where the container's stdout and stderr go (ctr run --log-uri file://...)."""
        return os.path.join(self.env.base, "container-output", f"{cid}.log")

    def run_argv(self, cid, argv, env=(), image=None):
        os.makedirs(os.path.dirname(self.output_path(cid)), exist_ok=True)
        args = ["run", "-d", "--runc-root", self.env.runc_root, "--runc-binary", self.arch_runc,
                "--log-uri", "file://" + self.output_path(cid), "--env", "ARCH_ENABLE=1"]
        for item in env:
            args += ["--env", item]
        if cid in self.binds:
            host, at = self.binds[cid]
            os.makedirs(host, exist_ok=True)
            args += ["--mount", f"type=bind,src={host},dst={at},options=rbind:rw"]
        return self.env.argv(*args, image or self.image, cid, *argv)

    def run(self, cid, argv, env=(), image=None, check=True, store=None, timeout=60):
        """`ctr run -d` with arch-runc and ARCH_ENABLE=1; waits until RUNNING when check."""
        self.created[cid] = store or self.node.store
        r = proc.run(self.run_argv(cid, argv, env, image), timeout=timeout)
        if check:
            assert r.returncode == 0, f"ctr run {cid} failed: {r.stderr}\n{self.diagnostics(cid)}"
            self.wait_status(cid, "RUNNING")
        return r

    def status(self, cid):
        return self.env.ctd.task_status(self.ns, cid)

    def wait_status(self, cid, status, timeout=30):
        try:
            self.env.ctd.wait_status(self.ns, cid, status, timeout)
        except proc.WaitTimeout as e:
            raise AssertionError(f"{e} (it is {self.status(cid)})\n{self.diagnostics(cid)}")

    def exec(self, cid, *argv, check=True, timeout=60):
        r = self.env.ctr("task", "exec", "--exec-id", "x" + secrets.token_hex(4), cid, *argv,
                         timeout=timeout)
        if check:
            assert r.returncode == 0, f"exec {argv} in {cid} failed: {r.stderr}"
        return r

    def read(self, cid, path):
        """A file's text inside the running container (ctr task exec cat), None if absent."""
        r = self.exec(cid, "cat", path, check=False)
        return r.stdout if r.returncode == 0 else None

    def host_path(self, cid, path):
        """Where the container's `path` is seen from the host (the bundle's rootfs mount)."""
        return os.path.join(self.env.rootfs(cid), path.lstrip("/"))

    def read_host(self, cid, path):
        try:
            with open(self.host_path(cid, path)) as f:
                return f.read()
        except OSError:
            return None

    def runc(self, *args, check=True):
        """The real runc on the container's runc root (what the shim uses: <runc-root>/<ns>)."""
        argv = [self.node.runc, "--root", os.path.join(self.env.runc_root, self.ns), *args]
        return proc.run(argv, check=check)

    def runc_status(self, cid):
        """runc's own status ("running", "paused" ...), which containerd does not see when
        something other than containerd paused the container; None when runc has none."""
        r = self.runc("state", cid, check=False)
        return json.loads(r.stdout)["status"] if r.returncode == 0 else None

    def signal(self, cid, sig):
        self.env.ctr("task", "kill", "-s", sig, cid, check=True)

    def delete(self, cid, timeout=30):
        """Waits for the task to stop, deletes it and the container; returns its exit status."""
        self.wait_status(cid, "STOPPED", timeout)
        r = self.env.ctr("task", "delete", cid, timeout=timeout)
        assert r.returncode == 0, f"ctr task delete {cid}: {r.stderr}"
        m = re.search(r"exit with non-zero exit code (\d+)", r.stderr)
        self.env.ctr("containers", "rm", cid, check=True)
        return int(m[1]) if m else 0

    def remove(self, cid):
        """Removes the task (whatever its state) and the container."""
        status = self.status(cid)
        if status == "PAUSED":
            self.env.ctr("task", "resume", cid, timeout=20)
        elif self.runc_status(cid) == "paused":  # frozen behind containerd's back
            self.runc("resume", cid, check=False)
        if status is not None:
            self.env.ctr("task", "kill", "-a", "-s", "SIGKILL", cid, timeout=20)
            try:
                proc.wait_until(lambda: self.status(cid) in (None, "STOPPED"), 10,
                                f"{cid} to stop", interval=0.05)
            except proc.WaitTimeout:
                pass
            self.env.ctr("task", "delete", "-f", cid, timeout=30)
        self.env.ctr("containers", "rm", cid, timeout=30)

    def cleanup(self):
        for cid in self.created:
            self.remove(cid)
        left = self.sweep()
        self.remove_keys()
        return left


class DockerContainers(Containers):
    """ARCH-enabled containers on the session's private dockerd (runtime "arch")."""

    ns = "moby"

    def __init__(self, env, image, archctl, node, cgroup_parent):
        super().__init__(archctl, node)
        self.env = env  # conftest.DockerEnv
        self.image = image
        self.parent = cgroup_parent
        self.ids = {}

    def id_of(self, name):
        if name not in self.ids:
            self.ids[name] = self.env.dockerd.inspect(name, "{{.Id}}")
        return self.ids[name]

    def key_of(self, name):
        return self.ids.get(name)

    def cgroup_parent(self):
        return self.parent

    def cgroup_name(self, name):
        return self.ids.get(name, "-")

    def bundle(self, name):
        cid = self.ids.get(name)
        path = os.path.join(self.env.ctd.task_dir(self.ns), cid) if cid else None
        return path if path and os.path.isdir(path) else None

    def run(self, name, argv, env=(), check=True, store=None):
        self.created[name] = store or self.node.store
        args = ["run", "-d", "--runtime", "arch", "-e", "ARCH_ENABLE=1", "--name", name]
        for item in env:
            args += ["-e", item]
        r = self.env.docker(*args, self.image, *argv, timeout=60)
        if check:
            assert r.returncode == 0, f"docker run {name}: {r.stderr}\n{self.diagnostics(name)}"
            self.id_of(name)
        return r

    def state(self, name):
        return json.loads(self.env.dockerd.inspect(name, "{{json .State}}"))

    def exec(self, name, *argv, check=True):
        r = self.env.docker("exec", name, *argv)
        if check:
            assert r.returncode == 0, f"docker exec {argv} in {name}: {r.stderr}"
        return r

    def read(self, name, path):
        r = self.exec(name, "cat", path, check=False)
        return r.stdout if r.returncode == 0 else None

    def cleanup(self):
        for name in self.created:
            self.env.docker("rm", "-f", name, timeout=60)
        left = self.sweep()
        self.remove_keys()
        return left
