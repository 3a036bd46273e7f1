"""Two ARCH nodes on one machine, sharing a real GlusterFS volume (issue 5's tests).

Layout (everything named after a per-run id, everything removed at the end):

    storage: netns + private mount ns; bridge br0 10.231.0.254/24; glusterd and the
             brick process (gluster.Server) with private /var/lib/glusterd, logs and /run
    node a:  netns (eth0 10.231.0.1/24, a veth into the storage bridge) + private mount
             ns holding the volume's FUSE mount at <base>/shared, a private containerd
             (own root, state, socket, runc root), archd (own socket, state, event log,
             [agent] containerd_address = this node's containerd, imds_endpoint = a fake
             IMDSv2 server on 127.0.0.1 inside this node's netns)
    node b:  the same with 10.231.0.2

The nodes reach each other and the storage address through the bridge (a switch). The
mount point path is the same on both nodes (they share the host's directory tree; the
mount exists only in their own mount namespaces), as on real nodes where the shared
file system is mounted at one path everywhere.

Each namespace set is kept alive by a holder process (`nsenter --net=... unshare
--mount --propagation private sleep infinity`); commands run inside a node through
`nsenter -t HOLDER -m -n` (Node.run / Node.popen), and daemons are started the same way
(the prefix of daemons.Containerd, archd.Archd, daemons.Dockerd). The test process itself
stays on the host: it reaches containerd's and archd's unix sockets by path, and a node's
view of files (the FUSE mount included) through /proc/HOLDER/root (Node.path).

Node.kill() is a machine dying: every process in the node's mount or network namespace
(containerd, shims, archd, archctl, runc, CRIU, the GlusterFS client) and in its
containers' cgroups is SIGKILLed by pid, with nothing flushed or cleaned up.
"""

import contextlib
import ctypes
import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time

from . import archd as archd_mod
from . import checkpoint, daemons, gluster, proc
from .fake_imds import FakeImds

NSENTER = "/usr/bin/nsenter"
UNSHARE = "/usr/bin/unshare"
IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "/sbin/ip"
SUBNET = "10.231.0"  # private to the test's network namespaces: never seen by the host
STORAGE_ADDRESS = f"{SUBNET}.254"
CLONE_NEWNET = 0x40000000
SHIM_SOCKET_DIR = "/run/containerd/s"  # containerd 1.6: shim sockets of every instance
PEER_PORT = 7443  # archd's [peers] listener on each node's own address (Cluster(peers=True))

_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args, check=True):
    return proc.run([IP, *args], timeout=30, check=check)


def ns_id(pid, kind):
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def in_netns(netns_path, fn):
    """Calls fn() on a thread that has joined the network namespace at netns_path (sockets
    it creates belong to that namespace); returns fn's result."""
    result = {}

    def body():
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({netns_path}): {os.strerror(err)}")
        finally:
            os.close(fd)
        try:
            result["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            result["error"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


class NsHolder:
    """A network namespace (`ip netns add NAME`) and a private mount namespace, both kept
    alive by one holder process; commands run inside through nsenter."""

    def __init__(self, name, netns):
        self.name = name
        self.netns = netns
        self.netns_path = f"/run/netns/{netns}"
        self.proc = None
        self.mnt = None
        self.net = None

    def start(self, timeout=20):
        own_mnt = ns_id("self", "mnt")
        self.proc = subprocess.Popen(
            [NSENTER, f"--net={self.netns_path}", UNSHARE, "--mount", "--propagation",
             "private", "sleep", "infinity"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name}'s namespace holder exited "
                                     f"{self.proc.returncode}")
            mnt = ns_id(self.proc.pid, "mnt")
            return mnt is not None and mnt != own_mnt and _comm(self.proc.pid) == "sleep"
        proc.wait_until(ready, timeout, f"{self.name}'s namespaces", interval=0.01)
        self.mnt = ns_id(self.proc.pid, "mnt")
        self.net = ns_id(self.proc.pid, "net")
        return self

    @property
    def pid(self):
        return self.proc.pid

    def prefix(self):
        """argv prefix that runs a command inside this holder's mount and network ns."""
        return [NSENTER, "-t", str(self.pid), "-m", "-n"]

    def argv(self, argv):
        return [*self.prefix(), *argv]

    def run(self, argv, timeout=60, check=False, env=None, input=None):
        return proc.run(self.argv(argv), timeout=timeout, check=check, env=env, input=input)

    def popen(self, argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.argv(argv), **kw)

    def path(self, p):
        """Host path that shows `p` as this namespace sees it (mounts included)."""
        return f"/proc/{self.pid}/root{p}"

    def pids(self):
        """Every live process in this mount or network namespace (the holder included)."""
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            if ns_id(entry, "mnt") == self.mnt or ns_id(entry, "net") == self.net:
                out.append(int(entry))
        return out

    def kill_all(self, extra=lambda: [], after_signal=lambda: None, timeout=20):
        """SIGKILLs (by pid) everything in the namespaces, plus the pids extra() names,
        until nothing is left; after_signal() runs after each round (to thaw frozen
        cgroups, whose processes die only once thawed). Returns {pid: cmdline}."""
        killed = {}
        deadline = time.monotonic() + timeout
        while True:
            pids = [p for p in set(self.pids()) | set(extra()) if checkpoint.alive(p)]
            if not pids:
                return killed
            for pid in pids:
                killed.setdefault(pid, _cmdline(pid))
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            after_signal()
            checkpoint.wait_gone(pids, 2)
            if time.monotonic() > deadline:
                left = [p for p in pids if checkpoint.alive(p)]
                raise AssertionError(f"{self.name}: processes survive SIGKILL: "
                                     f"{ {p: _cmdline(p) for p in left} }")

    def stop(self):
        if self.proc is not None:
            self.kill_all()
            self.proc.wait(10)
            self.proc = None


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def shim_socket(containerd_address, ns, cid):
    """The socket file containerd 1.6's runc v2 shim of ns/cid listens on
    (shim.SocketAddress: /run/containerd/s/<sha256 of "<address>/<ns>/<id>">)."""
    digest = hashlib.sha256(os.path.join(containerd_address, ns, cid).encode()).hexdigest()
    return os.path.join(SHIM_SOCKET_DIR, digest)


@dataclasses.dataclass
class Binaries:
    arch_runc: str
    archctl: str
    archd: str
    criu: str


@dataclasses.dataclass
class NodeConf:
    """What archd.write_config needs (the fields of conftest.NodeConfig)."""
    runc: str
    criu: str
    log_file: str
    store: str
    state: str
    keys: str  # [keys] dir: the cluster's, shared by both nodes (they share the store)
    roots: dict = dataclasses.field(default_factory=dict)  # [roots]: allowed store roots


class Node:
    """One node: namespaces, the shared mount, containerd, archd and a fake IMDS."""

    def __init__(self, cluster, name, address):
        self.cluster = cluster
        self.name = name
        self.address = address
        self.base = os.path.join(cluster.base, f"node-{name}")
        self.holder = NsHolder(f"node {name}", f"{cluster.prefix}-{name}")
        self.conf = NodeConf(daemons.RUNC, cluster.bin.criu, os.path.join(self.base, "arch.log"),
                             os.path.join(self.base, "store"), os.path.join(self.base, "state"),
                             cluster.keys, {"cluster": cluster.base})
        self.runc_root = os.path.join(self.base, "runc-root")
        self.output_dir = os.path.join(self.base, "container-output")
        self.docker_dir = os.path.join(self.base, "dockerd")  # start_docker's dockerd
        self.imds = None
        self.ctd = None
        self.archd = None
        self.dockerd = None
        self.containers = []  # ids created on this node (for the kill and the sweep)
        self.killed = False

    # ---- life cycle
    def start(self):
        for d in (self.base, self.runc_root, self.output_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)
        self.holder.start()
        self.holder.run(["ip", "link", "set", "lo", "up"], check=True)
        if self.cluster.gluster:
            gluster.mount(self.holder, self.cluster.server, self.cluster.shared,
                          os.path.join(self.base, "glusterfs-client.log"))
        self.imds = in_netns(self.holder.netns_path, FakeImds).start()
        ctd_base = os.path.join(self.base, "containerd")
        agent = (f"imds_endpoint = {self.imds.endpoint}\nimds_poll_seconds = 1\n"
                 f"safety_margin_seconds = 10\n"
                 f"containerd_address = {os.path.join(ctd_base, 'containerd.sock')}\n"
                 f"{self.peers_section()}")
        self.archd = archd_mod.Archd(self.cluster.bin.archd, os.path.join(self.base, "archd"),
                                     self.conf, metrics=False, prefix=self.holder.prefix(),
                                     extra=agent)
        path = (os.environ.get("PATH", "") +
                ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        self.ctd = daemons.Containerd(ctd_base, env={"ARCH_CONFIG": self.config, "PATH": path},
                                      prefix=self.holder.prefix())
        assert self.ctd.address == os.path.join(ctd_base, "containerd.sock")
        self.ctd.start()
        self.ctr("images", "import", self.cluster.image_archive, check=True, timeout=120)
        self.archd.start()
        return self

    def peers_section(self):
        """[peers] of this node when the cluster has them: named after the node, listening
        on its address, knowing the other node(s)."""
        if not self.cluster.peers:
            return ""
        others = ", ".join(f"{n.name}={n.address}:{PEER_PORT}"
                           for n in self.cluster.nodes.values() if n is not self)
        return (f"[peers]\ndir = {os.path.join(self.base, 'peers')}\nnode_name = {self.name}\n"
                f"listen = {self.address}:{PEER_PORT}\nnodes = {others}\ntimeout = 10\n"
                # Live migration to this node re-creates containers as start_container does.
                f"migrate_ctr = {daemons.CTR}\nmigrate_runtime = {self.cluster.bin.arch_runc}\n"
                f"migrate_runc_root = {self.runc_root}\n"
                # Both nodes share this machine's cgroups: a migrated task gets its own.
                f"migrate_cgroup_parent = /{self.cluster.ns}-{self.name}\n"
                # Docker containers migrate through the dockerd start_docker starts (if it
                # does): its CLI, socket, runtime "arch" and data root (Docker's records).
                f"migrate_docker = {daemons.docker_client() or '/usr/bin/docker'}\n"
                f"migrate_docker_host = unix://{os.path.join(self.docker_dir, 'docker.sock')}\n"
                f"migrate_docker_runtime = arch\n"
                f"[docker]\ndata_root = {os.path.join(self.docker_dir, 'data')}\n")

    def start_docker(self, image_archive):
        """A private dockerd on this node's containerd (runtime "arch" = arch-runc), with
        its own data root, exec root, pid file and socket, and /run/docker private to the
        node (dockerd 20.10 creates its plugin directory there whatever --exec-root says)."""
        if not os.path.isdir("/run/docker"):
            os.makedirs("/run/docker", mode=0o700)
            self.cluster.created_run_docker = True
        self.holder.run(["mount", "-t", "tmpfs", "-o", "mode=0700", "arch-test-docker",
                         "/run/docker"], check=True)
        self.dockerd = daemons.Dockerd(self.docker_dir, self.ctd,
                                       {"arch": self.cluster.bin.arch_runc},
                                       f"{self.cluster.prefix}-docker-{self.name}",
                                       prefix=self.holder.prefix())
        self.dockerd.start()
        self.docker("load", "-i", image_archive, check=True, timeout=120)
        return self.dockerd

    def docker(self, *args, timeout=60, check=False):
        return self.run(self.dockerd.argv(*args), timeout=timeout, check=check)

    @property
    def config(self):
        """The node config (archd's, with [agent]): ARCH_CONFIG of containerd and archctl."""
        return self.archd.config

    def env(self):
        env = dict(os.environ, ARCH_CONFIG=self.config)
        if self.dockerd is not None:
            env["DOCKER_CONFIG"] = self.dockerd.client_config
        return env

    def stop(self):
        """Everything of the node, by pid; safe on a node that kill() already ended."""
        errors = []
        for step in (self._stop_daemons, self._stop_namespaces, self._remove_files):
            try:
                step()
            except Exception as e:  # the later steps still run
                errors.append(f"{self.name}: {step.__name__}: {e}")
        return errors

    def _stop_daemons(self):
        if self.archd is not None and self.archd.proc is not None:
            self.archd.stop(timeout=60)
        if self.dockerd is not None:
            self.dockerd.stop(remove_files=False)
        if self.ctd is not None:
            self.ctd.stop(remove_files=False)
        if self.imds is not None:
            self.imds.stop()
            self.imds = None

    def _stop_namespaces(self):
        if self.holder.proc is not None:
            if not self.killed and self.cluster.gluster:
                gluster.unmount(self.holder, self.cluster.shared)
            self.holder.kill_all(extra=self._container_pids, after_signal=self._thaw)
            self.holder.proc.wait(10)
            self.holder.proc = None
        for cid in self.containers:
            checkpoint.sweep_cgroup(self.cluster.ns, cid)
        ip("netns", "del", self.holder.netns, check=False)

    def _remove_files(self):
        if self.ctd is not None:
            for cid in self.containers:
                sock = shim_socket(self.ctd.address, self.cluster.ns, cid)
                if os.path.exists(sock):
                    os.unlink(sock)
        leftovers = daemons.mounts_under(self.base)
        assert not leftovers, f"mounts left under {self.base}: {leftovers}"
        shutil.rmtree(self.base, ignore_errors=True)

    def _thaw(self):
        for cid in self.containers:
            for d in checkpoint.cgroup_dirs(self.cluster.ns, cid):
                checkpoint._thaw(d)

    def _container_pids(self):
        pids = []
        for cid in self.containers:
            for d in checkpoint.cgroup_dirs(self.cluster.ns, cid):
                pids += checkpoint.cgroup_pids(d)
        return pids

    def kill(self):
        """The machine dies: SIGKILL every process of the node, nothing cleaned up. Frozen
        containers are thawed afterwards so their killed processes can go."""
        self.killed = True
        killed = self.holder.kill_all(extra=self._container_pids, after_signal=self._thaw)
        self.holder.proc.wait(10)
        self.holder.proc = None
        # Their Popen objects reap the exit statuses.
        for p in (self.ctd.proc if self.ctd else None, self.archd.proc if self.archd else None):
            if p is not None:
                p.poll()
        return killed

    # ---- running things in the node
    def run(self, argv, timeout=60, check=False, input=None):
        return self.holder.run(argv, timeout=timeout, check=check, env=self.env(), input=input)

    def popen(self, argv, **kw):
        kw.setdefault("env", self.env())
        return self.holder.popen(argv, **kw)

    def path(self, p):
        return self.holder.path(p)

    def ctr(self, *args, timeout=60, check=False):
        return self.run(self.ctd.ctr_argv(*args, ns=self.cluster.ns), timeout=timeout,
                        check=check)

    def archctl(self, *args, timeout=120):
        return self.run([self.cluster.bin.archctl, *args], timeout=timeout)

    def archctl_json(self, *args, timeout=120, ok=(0,)):
        r = self.archctl(*args, "-o", "json", timeout=timeout)
        assert r.returncode in ok, (f"node {self.name}: archctl {' '.join(args)} exited "
                                    f"{r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}")
        return json.loads(r.stdout)

    # ---- containers
    def output_path(self, cid):
        return os.path.join(self.output_dir, f"{cid}.log")

    def start_container(self, cid, argv, env=(), image=None, check=True, node_network=False):
        """`ctr run -d` with arch-runc and ARCH_ENABLE=1 (plus env); waits for RUNNING.
        node_network: the container joins the node's network namespace (its address)."""
        if cid not in self.containers:
            self.containers.append(cid)
        args = ["run", "-d", "--runc-root", self.runc_root, "--runc-binary",
                self.cluster.bin.arch_runc, "--log-uri", "file://" + self.output_path(cid),
                "--env", "ARCH_ENABLE=1"]
        if node_network:
            args += ["--with-ns", f"network:{self.holder.netns_path}"]
        for item in env:
            args += ["--env", item]
        r = self.ctr(*args, image or self.cluster.image, cid, *argv, timeout=120)
        if check:
            assert r.returncode == 0, (f"node {self.name}: ctr run {cid} failed: {r.stderr}\n"
                                       f"{self.diagnostics(cid)}")
            self.wait_status(cid, "RUNNING")
        return r

    def status(self, cid):
        return self.ctd.task_status(self.cluster.ns, cid)

    def wait_status(self, cid, status, timeout=60):
        try:
            self.ctd.wait_status(self.cluster.ns, cid, status, timeout)
        except proc.WaitTimeout as e:
            raise AssertionError(f"node {self.name}: {e} (it is {self.status(cid)})\n"
                                 f"{self.diagnostics(cid)}")

    def exec(self, cid, *argv, check=True, timeout=60):
        r = self.ctr("task", "exec", "--exec-id", "x" + secrets.token_hex(4), cid, *argv,
                     timeout=timeout)
        if check:
            assert r.returncode == 0, f"node {self.name}: exec {argv} in {cid}: {r.stderr}"
        return r

    def read(self, cid, path):
        """A file's text as the running container sees it; None when it cannot be read."""
        r = self.exec(cid, "cat", path, check=False)
        return r.stdout if r.returncode == 0 else None

    def bundle(self, cid):
        return os.path.join(self.ctd.task_dir(self.cluster.ns), cid)

    def log_messages(self, cid):
        """Messages of the container's bundle log.json (arch-runc's and runc's)."""
        text = checkpoint.read_text(os.path.join(self.bundle(cid), "log.json"))
        return checkpoint.messages(checkpoint.json_lines(text))

    def exit_record(self, cid, ns=None):
        """archd's record of cid's exit status (None until archd has seen the exit)."""
        try:
            with open(os.path.join(self.conf.state, "exits", ns or self.cluster.ns, cid)) as f:
                return json.load(f)["exit_status"]
        except (OSError, ValueError, KeyError):
            return None

    def delete(self, cid, timeout=60):
        """What an orchestrator does with an ended container: waits until it has stopped and
        archd has recorded its exit, then deletes the task and the container (arch-runc's
        delete hook runs inside `ctr task delete`). Returns the recorded exit status."""
        self.wait_status(cid, "STOPPED", timeout)
        status = proc.wait_until(lambda: self.exit_record(cid) is not None and
                                 (self.exit_record(cid),), timeout,
                                 f"archd on {self.name} to record the exit of {cid}")[0]
        r = self.ctr("task", "delete", cid, timeout=timeout)
        assert r.returncode == 0, f"node {self.name}: ctr task delete {cid}: {r.stderr}"
        r = self.ctr("containers", "rm", cid, timeout=timeout)
        assert r.returncode == 0, f"node {self.name}: ctr containers rm {cid}: {r.stderr}"
        return status

    def diagnostics(self, cid=None):
        parts = []
        if cid:
            out = self.output_path(cid)
            if os.path.exists(out):
                parts.append(f"--- {cid}'s output\n{checkpoint.read_text(out, 3000)}")
            log = os.path.join(self.bundle(cid), "log.json")
            if os.path.exists(log):
                parts.append(f"--- {log}\n{checkpoint.read_text(log, 6000)}")
            restore_log = os.path.join(self.bundle(cid), "arch-restore", "restore.log")
            if os.path.exists(restore_log):
                parts.append(f"--- {restore_log} (excerpt)\n"
                             f"{checkpoint.criu_log_excerpt(restore_log)}")
        parts.append(f"--- node {self.name} log (tail)\n"
                     f"{checkpoint.read_text(self.conf.log_file, 6000)}")
        if self.archd is not None:
            parts.append(f"--- archd on {self.name}\n{self.archd.log_text()[-4000:]}")
        return "\n".join(parts)


class Cluster:
    """The storage namespace with the GlusterFS volume, and nodes a and b."""

    def __init__(self, base, binaries, image, image_archive, ns=None, glusterfs=True,
                 peers=False):
        """glusterfs=False: the shared directory is a plain directory of this machine, seen
        at the same path by both nodes (no GlusterFS). peers: archd's [peers] on each node."""
        self.gluster = glusterfs
        self.peers = peers
        self.id = secrets.token_hex(3)
        self.prefix = f"arch2n-{self.id}"  # netns names
        self.base = base
        self.bin = binaries
        self.image = image
        self.image_archive = image_archive
        self.ns = ns or f"arch-2n-{self.id}"  # the containerd namespace, the same on both
        self.shared = os.path.join(base, "shared")  # the mount point, on both nodes
        self.keys = os.path.join(base, "keys")  # one node key for both nodes
        self.storage = NsHolder("storage", f"{self.prefix}-s")
        self.server = gluster.Server(self.storage, os.path.join(base, "gluster"),
                                     STORAGE_ADDRESS, f"arch2n{self.id}")
        self.nodes = {"a": Node(self, "a", f"{SUBNET}.1"), "b": Node(self, "b", f"{SUBNET}.2")}
        self.netns_created = []
        self.created_run_docker = False

    @property
    def a(self):
        return self.nodes["a"]

    @property
    def b(self):
        return self.nodes["b"]

    def _network(self):
        s = self.storage.netns
        for node in self.nodes.values():
            ip("netns", "add", node.holder.netns)
            self.netns_created.append(node.holder.netns)
        ip("netns", "add", s)
        self.netns_created.append(s)
        ip("-n", s, "link", "add", "br0", "type", "bridge")
        ip("-n", s, "addr", "add", f"{STORAGE_ADDRESS}/24", "dev", "br0")
        ip("-n", s, "link", "set", "br0", "up")
        ip("-n", s, "link", "set", "lo", "up")
        for name, node in self.nodes.items():
            n = node.holder.netns
            # Created directly inside the namespaces: no name is ever taken on the host.
            ip("link", "add", "eth0", "netns", n, "type", "veth", "peer", "name", f"to-{name}",
               "netns", s)
            ip("-n", s, "link", "set", f"to-{name}", "master", "br0")
            ip("-n", s, "link", "set", f"to-{name}", "up")
            ip("-n", n, "addr", "add", f"{node.address}/24", "dev", "eth0")
            ip("-n", n, "link", "set", "eth0", "up")

    def start(self):
        os.makedirs(self.base, mode=0o700, exist_ok=True)
        os.makedirs(self.shared, mode=0o755, exist_ok=True)
        daemons.make_key_dir(self.keys)
        self._network()
        self.storage.start()
        if self.gluster:
            self.server.start()
        for node in self.nodes.values():
            node.start()
        return self

    def stop(self):
        """Tears everything down (even after failures); raises if something was left."""
        errors = []
        for node in self.nodes.values():
            errors += node.stop()
        try:
            if self.gluster:
                self.server.stop()
        except Exception as e:
            errors.append(f"gluster: {e}")
        try:
            self.storage.stop()
        except Exception as e:
            errors.append(f"storage namespace: {e}")
        for n in self.netns_created:
            ip("netns", "del", n, check=False)
        daemons.remove_cgroup_parent(self.ns)
        if self.created_run_docker:
            try:
                os.rmdir("/run/docker")  # only when empty: a host dockerd may use it now
            except OSError:
                pass
        leftovers = daemons.mounts_under(self.base)
        if leftovers:
            errors.append(f"mounts left: {leftovers}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)
        if errors:
            raise AssertionError("two-node teardown: " + "; ".join(errors))

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            try:
                self.stop()
            except AssertionError:
                pass
            raise

    def __exit__(self, *exc):
        self.stop()

    # ---- the shared file system, as a node sees it (ns: containerd namespace, default
    # the cluster's; "moby" for Docker)
    def checkpoint_dir(self, key, node=None, ns=None):
        """<shared>/checkpoint/<ns>/<key> as a live node sees it (host path)."""
        return self.view(node).path(os.path.join(self.shared, "checkpoint", ns or self.ns, key))

    def work_dir(self, key, node=None, ns=None):
        return self.view(node).path(os.path.join(self.shared, "work", ns or self.ns, key))

    def view(self, node=None):
        if node is not None:
            return node
        return next(n for n in self.nodes.values() if not n.killed)

    def committed(self, key, node=None, ns=None):
        """Names of the committed checkpoints (ckpt-*) of key, oldest first."""
        try:
            names = os.listdir(self.checkpoint_dir(key, node, ns))
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.startswith("ckpt-"))

    def checkpoint_path(self, key, name, ns=None):
        """The path ARCH itself uses (and logs) for checkpoint `name` of key."""
        return os.path.join(self.shared, "checkpoint", ns or self.ns, key, name)


@contextlib.contextmanager
def peer_cluster(base, binaries, image, image_archive):
    """Two nodes with [peers] and no shared file system (the migration and cross-node group
    tests). `migrated` collects (node, id) of tasks re-created in a node's own cgroup parent;
    they and the parents are swept at the end."""
    with Cluster(base, binaries, image, image_archive, glusterfs=False, peers=True) as c:
        c.migrated = []
        try:
            yield c
        finally:
            for node, cid in c.migrated:
                checkpoint.sweep_cgroup(f"{c.ns}-{node}", cid)
    for node in ("a", "b"):
        daemons.remove_cgroup_parent(f"{c.ns}-{node}")
