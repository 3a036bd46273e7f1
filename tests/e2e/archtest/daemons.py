"""Private containerd and dockerd instances for tests, and the ARCH node config.

Everything lives under one base directory (state, sockets, logs); nothing is written
to the host's /var/lib/containerd, /run/containerd/containerd.sock or /var/lib/docker.
Daemons are stopped by pid (SIGTERM, wait, SIGKILL).  Before stopping containerd,
every task and container it knows is removed, so no shim, mount, cgroup or runc state
is left; a final sweep unmounts anything still mounted under the base directory.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess

from . import proc

# The engines under test. ARCH_E2E_ENGINES=forky (ctest's e2e.forky.* runs) takes
# containerd 2.x, its runc v2 shim, ctr and runc 1.3 from the private prefix that
# scripts/install-test-engines.sh fills from Debian forky; default: Debian 12's.
FORKY_PREFIX = os.environ.get("ARCH_TEST_ENGINES_PREFIX") or "/var/cache/arch-test/forky"
ENGINES = os.environ.get("ARCH_E2E_ENGINES") or "debian"
if ENGINES not in ("debian", "forky"):
    raise RuntimeError(f"ARCH_E2E_ENGINES={ENGINES!r}: expected debian or forky")
FORKY = ENGINES == "forky"
if FORKY:
    ENGINE_BIN_DIR = os.path.join(FORKY_PREFIX, "bin")  # first on containerd's PATH (shim, runc)
    RUNC = os.path.join(ENGINE_BIN_DIR, "runc")
    CONTAINERD = os.path.join(ENGINE_BIN_DIR, "containerd")
    CTR = os.path.join(ENGINE_BIN_DIR, "ctr")
    SHIM = os.path.join(ENGINE_BIN_DIR, "containerd-shim-runc-v2")
else:
    ENGINE_BIN_DIR = None
    RUNC = "/usr/sbin/runc"
    CONTAINERD = "/usr/bin/containerd"
    CTR = "/usr/bin/ctr"
    SHIM = shutil.which("containerd-shim-runc-v2") or "/usr/bin/containerd-shim-runc-v2"
DOCKERD = "/usr/sbin/dockerd"


def engine_versions():
    """The first line of `--version` of containerd and runc under test (for reports)."""
    out = {}
    for name, path in (("containerd", CONTAINERD), ("runc", RUNC)):
        try:
            r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
            out[name] = (r.stdout.splitlines() or ["?"])[0]
        except OSError as e:
            out[name] = f"missing ({e})"
    return out


def containerd_config_version():
    """The config.toml version the containerd under test reads natively (2.x: 3)."""
    return 3 if FORKY else 2


def engine_path(path):
    """A PATH for containerd: the engines' own directory first (its shim and runc)."""
    return f"{ENGINE_BIN_DIR}:{path}" if ENGINE_BIN_DIR else path


def docker_client():
    """The docker CLI matching dockerd 20.10 (Debian's), else whatever is on PATH."""
    if os.access("/usr/bin/docker", os.X_OK):
        return "/usr/bin/docker"
    return shutil.which("docker")


def key_id(hex_key):
    """A node key's id, as ARCH derives it (store/node_key.h)."""
    return hashlib.sha256(b"arch-node-key-id:" + hex_key.encode()).hexdigest()[:16]


def make_key_dir(path):
    """A root-only [keys] dir holding one node key (kept if it already holds one), as
    `archctl key init` makes it. Returns (path, key id)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    existing = sorted(n for n in os.listdir(path) if n.endswith(".key"))
    if existing:
        return path, existing[0][:-4]
    hex_key = os.urandom(32).hex()
    kid = key_id(hex_key)
    fd = os.open(os.path.join(path, kid + ".key"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(hex_key + "\n")
    return path, kid


def roots_section(roots, on_disallowed=None):
    """[roots] lines (name -> path) and [store] on_disallowed, as arch.conf text."""
    text = f"[store]\non_disallowed = {on_disallowed}\n" if on_disallowed else ""
    if roots:
        text += "[roots]\n" + "".join(f"{name} = {path}\n" for name, path in roots.items())
    return text


def write_node_config(directory, log_file, runc=RUNC, level="debug", criu=None, store=None,
                      state=None, on_failure=None, keys=None, roots=None, on_disallowed=None,
                      group_wait=None):
    """Writes an arch.conf that arch-runc accepts (root-owned, not group/world writable).

    criu, store ([store] path), state ([state] dir), on_failure ([restore]), roots
    ([roots]: the allowed store roots besides [store] path, name -> path) and
    on_disallowed ([store]) and group_wait ([restore]) are written only when given. keys ([keys] dir): a key dir; by
    default <directory>/keys, made with one key (make_key_dir)."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "arch.conf")
    text = f"[runtime]\nrunc = {runc}\n"
    if criu:
        text += f"criu = {criu}\n"
    text += f"[log]\nlevel = {level}\nfile = {log_file}\n"
    if store:
        text += f"[store]\npath = {store}\n"
    if state:
        text += f"[state]\ndir = {state}\n"
    if on_failure or group_wait:
        text += "[restore]\n"
    if on_failure:
        text += f"on_failure = {on_failure}\n"
    if group_wait:
        text += f"group_wait = {group_wait}\n"
    if keys is None:
        keys, _ = make_key_dir(os.path.join(directory, "keys"))
    text += f"[keys]\ndir = {keys}\n"
    text += roots_section(roots, on_disallowed)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


def write_script(path, text):
    """A root-owned 0755 shell script (what arch-runc accepts as a runtime)."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + text)
    os.chmod(path, 0o755)
    return path


def config_wrapper(path, config, arch_runc):
    """A runtime for an engine (ctr --runc-binary, a dockerd runtime) that runs arch-runc
    with the node config `config`: one container can use another node config than the
    session's (containerd's environment names that one)."""
    return write_script(path, f'ARCH_CONFIG={config} exec {arch_runc} "$@"\n')


def file_tail(path, n=40):
    """The last n lines of a daemon's log ("" when it cannot be read)."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def mounts_under(path):
    """Mount points at or below `path`, deepest first."""
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == path or point.startswith(path + "/"):
                found.append(point)
    return sorted(set(found), key=len, reverse=True)


def unmount_all_under(path):
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", point], capture_output=True)


def pids_with_args(*wanted, substring=False):
    """Pids of live (not zombie) processes whose command line holds every one of `wanted`
    as an exact argument, or with `substring` anywhere in the command line."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        have = cmd if substring else cmd.split(b"\0")
        if state != "Z" and all(w.encode() in have for w in wanted):
            pids.append(int(entry))
    return pids


def remove_cgroup_parent(name):
    """Removes the (empty) parent cgroup `/<name>` that runc created in every hierarchy."""
    root = "/sys/fs/cgroup"
    candidates = [os.path.join(root, name)]
    try:
        candidates += [os.path.join(root, c, name) for c in os.listdir(root)]
    except OSError:
        pass
    for path in candidates:
        if os.path.isdir(path):
            try:
                os.rmdir(path)
            except OSError:
                pass


def _remove_tree(path):
    """rmtree, but never across a mount point (a bind mount could lead out of `path`)."""
    if os.path.exists(path) and not mounts_under(path):
        shutil.rmtree(path, ignore_errors=True)


class Containerd:
    """A private containerd: own root, state, sockets and config; CRI disabled unless
    `cri_config` (TOML of the [plugins."io.containerd.grpc.v1.cri"] sections) is given."""

    def __init__(self, base, env=None, prefix=(), cri_config=None):
        self.base = base
        self.prefix = list(prefix)  # e.g. nsenter into a test node's namespaces
        self.root = os.path.join(base, "root")
        self.state = os.path.join(base, "state")
        self.address = os.path.join(base, "containerd.sock")
        self.config = os.path.join(base, "config.toml")
        self.log_path = os.path.join(base, "containerd.log")
        self.extra_env = dict(env or {})
        self.cri_config = cri_config
        self.proc = None

    def _write_config(self):
        version = containerd_config_version()
        if self.cri_config:
            disabled = ""
        elif version >= 3:
            # containerd 2.x splits CRI into three plugins; NRI would listen on /var/run/nri.
            disabled = ('disabled_plugins = ["io.containerd.grpc.v1.cri", '
                        '"io.containerd.cri.v1.runtime", "io.containerd.nri.v1.nri"]')
        else:
            disabled = 'disabled_plugins = ["io.containerd.grpc.v1.cri"]'
        with open(self.config, "w") as f:
            f.write(f"""version = {version}
root = "{self.root}"
state = "{self.state}"
{disabled}

[grpc]
  address = "{self.address}"

[debug]
  address = "{os.path.join(self.base, 'debug.sock')}"
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{os.path.join(self.base, 'opt')}"
""")
            if self.cri_config:
                f.write(self.cri_config)

    def start(self, timeout=30):
        os.makedirs(self.base, mode=0o700, exist_ok=True)
        self._write_config()
        env = dict(os.environ, **self.extra_env)
        env["PATH"] = engine_path(env.get("PATH", ""))
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.prefix, CONTAINERD, "--config", self.config, "--root", self.root, "--state", self.state,
             "--address", self.address],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        log.close()

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited {self.proc.returncode}: {self.log_tail()}")
            return self.ctr("version", ns="default", timeout=5).returncode == 0

        proc.wait_until(ready, timeout, "containerd to answer `ctr version`", interval=0.02)

    def log_tail(self, n=40):
        return file_tail(self.log_path, n)

    def ctr_argv(self, *args, ns):
        return [CTR, "--address", self.address, "-n", ns, *args]

    def ctr(self, *args, ns, timeout=60, check=False, input=None):
        return proc.run(self.ctr_argv(*args, ns=ns), timeout=timeout, check=check, input=input)

    def task_dir(self, ns):
        """Where the runc v2 shim keeps each task's bundle (`<task_dir>/<id>/log.json`)."""
        return os.path.join(self.state, "io.containerd.runtime.v2.task", ns)

    def task_status(self, ns, cid):
        """The STATUS column of `ctr task ls` for cid, or None when there is no task."""
        out = self.ctr("task", "ls", ns=ns, check=True).stdout
        for line in out.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == cid:
                return fields[-1]
        return None

    def wait_status(self, ns, cid, status, timeout=30):
        proc.wait_until(lambda: self.task_status(ns, cid) == status, timeout,
                        f"task {cid} to be {status}", interval=0.02)

    def remove_everything(self):
        """Kills and deletes every task, then deletes every container, in every namespace."""
        listing = self.ctr("namespaces", "ls", "-q", ns="default", timeout=20)
        for ns in listing.stdout.split():
            tasks = self.ctr("task", "ls", "-q", ns=ns, timeout=20).stdout.split()
            for cid in tasks:
                self.ctr("task", "kill", "-a", "-s", "SIGKILL", cid, ns=ns, timeout=20)
            for cid in tasks:
                try:
                    proc.wait_until(lambda: self.task_status(ns, cid) in (None, "STOPPED"),
                                    10, f"task {cid} to stop", interval=0.05)
                except proc.WaitTimeout:
                    pass
                self.ctr("task", "delete", "-f", cid, ns=ns, timeout=20)
            for cid in self.ctr("containers", "ls", "-q", ns=ns, timeout=20).stdout.split():
                self.ctr("containers", "rm", cid, ns=ns, timeout=20)

    def stop(self, remove_files=True):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.remove_everything()
            except Exception:  # best effort: the sweeps below still run
                pass
        proc.stop_process(self.proc)
        # Shims of tasks that could not be deleted carry our socket path in their argv.
        for pid in pids_with_args(self.address):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        unmount_all_under(self.base)
        if remove_files:
            for d in (self.root, self.state):
                _remove_tree(d)
        self.proc = None


class Dockerd:
    """A private dockerd using a given containerd, with extra named runtimes."""

    def __init__(self, base, containerd, runtimes, cgroup_parent, prefix=()):
        self.base = base
        self.prefix = list(prefix)  # e.g. nsenter into a test node's namespaces
        self.cgroup_parent = cgroup_parent
        self.containerd = containerd
        self.runtimes = dict(runtimes)
        self.host = "unix://" + os.path.join(base, "docker.sock")
        self.data_root = os.path.join(base, "data")
        self.exec_root = os.path.join(base, "exec")
        self.pidfile = os.path.join(base, "dockerd.pid")
        self.config = os.path.join(base, "daemon.json")
        self.log_path = os.path.join(base, "dockerd.log")
        self.client_config = os.path.join(base, "client")
        self.docker = docker_client()
        self.proc = None

    # dockerd 20.10 always creates this (plugin sockets), whatever --exec-root says.
    PLUGIN_DIRS = ("/run/docker/plugins", "/run/docker")

    def start(self, timeout=60):
        os.makedirs(self.base, mode=0o700, exist_ok=True)
        os.makedirs(self.client_config, exist_ok=True)
        self._created_dirs = [d for d in self.PLUGIN_DIRS if not os.path.exists(d)]
        with open(self.config, "w") as f:
            json.dump({"runtimes": {name: {"path": path} for name, path in self.runtimes.items()},
                       "storage-driver": "overlay2", "log-driver": "json-file",
                       "ip6tables": False, "userland-proxy": False,
                       "cgroup-parent": "/" + self.cgroup_parent,
                       # dockerd 20.10 otherwise writes /etc/docker/key.json
                       "deprecated-key-path": os.path.join(self.base, "key.json")}, f, indent=2)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.prefix, DOCKERD, "--experimental", "--containerd", self.containerd.address,
             "--iptables=false", "--bridge=none", "--data-root", self.data_root,
             "--exec-root", self.exec_root, "--pidfile", self.pidfile, "-H", self.host,
             "--config-file", self.config],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.proc.returncode}: {self.log_tail()}")
            return self.cli("version", timeout=5).returncode == 0

        proc.wait_until(ready, timeout, "dockerd to answer `docker version`", interval=0.05)

    def log_tail(self, n=40):
        return file_tail(self.log_path, n)

    def env(self):
        return dict(os.environ, DOCKER_CONFIG=self.client_config)

    def argv(self, *args):
        return [self.docker, "-H", self.host, *args]

    def cli(self, *args, timeout=60, check=False):
        return proc.run(self.argv(*args), timeout=timeout, check=check, env=self.env())

    def inspect(self, name, template):
        return self.cli("inspect", "-f", template, name, check=True).stdout.strip()

    def merged_dir(self, name):
        """The container's root filesystem as seen from the host (overlay2 merged dir)."""
        return self.inspect(name, "{{.GraphDriver.Data.MergedDir}}")

    def remove_all_containers(self):
        ids = self.cli("ps", "-aq", timeout=20).stdout.split()
        if ids:
            self.cli("rm", "-f", *ids, timeout=60)

    def stop(self, remove_files=True):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.remove_all_containers()
            except Exception:
                pass
        proc.stop_process(self.proc, timeout=30)
        unmount_all_under(self.base)
        remove_cgroup_parent(self.cgroup_parent)
        for d in self._created_dirs:  # only if empty: another dockerd may use them
            try:
                os.rmdir(d)
            except OSError:
                pass
        if remove_files:
            for d in (self.data_root, self.exec_root):
                _remove_tree(d)
        self.proc = None
