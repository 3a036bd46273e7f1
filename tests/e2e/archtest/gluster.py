"""A real GlusterFS volume for the two-node tests (Debian's glusterfs-server and
glusterfs-client; see twonode.py for the namespaces it runs in).

The server side (glusterd and the brick process glusterfsd it starts) runs in a
"storage" namespace holder: its own network namespace (the storage address on a bridge
that both nodes reach) and its own mount namespace in which /var/lib/glusterd,
/var/log/glusterfs and /run are private directories of the test. So the host's
glusterd state, port 24007 and /run/glusterd.socket are never touched, and a second
test run (or a host glusterd) cannot collide with this one.

Clients are FUSE mounts (`mount -t glusterfs ADDR:/VOL DIR`) made inside each node's
mount namespace; the mount's process (glusterfs) lives in that node, so a killed node
loses its client too, as a real machine would.
"""

import os
import subprocess

from . import proc

GLUSTERD = "/usr/sbin/glusterd"
GLUSTER = "/usr/sbin/gluster"
MOUNT_GLUSTERFS = "/sbin/mount.glusterfs"

# Where glusterd keeps its state, logs and sockets; each is replaced, inside the storage
# mount namespace only, by a directory of the test (or a tmpfs for /run).
PRIVATE_DIRS = ("/var/lib/glusterd", "/var/log/glusterfs")


def available():
    """Why GlusterFS cannot be used here, or None when it can."""
    for path in (GLUSTERD, GLUSTER, MOUNT_GLUSTERFS):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (Debian packages glusterfs-server, glusterfs-client)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (the GlusterFS client is a FUSE file system)"
    return None


class Server:
    """glusterd plus one single-brick volume, inside `host` (a twonode.NsHolder)."""

    def __init__(self, host, base, address, volume):
        self.host = host
        self.base = base
        self.address = address
        self.volume = volume
        self.brick = os.path.join(base, "brick", volume)
        self.log_dir = os.path.join(base, "log")
        self.proc = None
        self.created = False
        self.started = False

    def gluster(self, *args, timeout=60, check=True):
        return self.host.run([GLUSTER, "--mode=script", *args], timeout=timeout, check=check)

    def start(self, timeout=60):
        lib = os.path.join(self.base, "lib")
        for d in (lib, self.log_dir, os.path.dirname(self.brick)):
            os.makedirs(d, mode=0o700, exist_ok=True)
        # Private state, logs and run directory, in the storage mount namespace only.
        self.host.run(["mount", "--bind", lib, "/var/lib/glusterd"], check=True)
        self.host.run(["mount", "--bind", self.log_dir, "/var/log/glusterfs"], check=True)
        self.host.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "arch-test-run", "/run"],
                      check=True)
        out = open(os.path.join(self.base, "glusterd.out"), "ab")
        # -N: glusterd stays in the foreground, so it is our child and stopped by pid.
        self.proc = self.host.popen([GLUSTERD, "-N", "-p", "/run/glusterd.pid"], stdout=out,
                                    stderr=out)
        out.close()

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"glusterd exited {self.proc.returncode}: {self.log_tail()}")
            # The CLI waits (long) for a glusterd that is not listening yet: ask only once
            # its socket exists, and with a short timeout.
            if not os.path.exists(self.host.path("/run/glusterd.socket")):
                return False
            try:
                r = self.gluster("--timeout=5", "volume", "list", timeout=10, check=False)
            except subprocess.TimeoutExpired:
                return False
            return r.returncode == 0
        proc.wait_until(ready, timeout, "glusterd to answer `gluster volume list`", interval=0.05)
        # "force": the brick sits on the root file system, which gluster warns about.
        self.gluster("volume", "create", self.volume, f"{self.address}:{self.brick}", "force")
        self.created = True
        # Jobs move between nodes within milliseconds here: what one client wrote must be
        # what the other reads next. GlusterFS's client-side caches (metadata, small-file
        # and page caches, read-ahead) can serve another client a stale size or content
        # for about a second, so they are off, as for any volume shared by moving jobs.
        for option in ("performance.stat-prefetch", "performance.quick-read",
                       "performance.io-cache", "performance.read-ahead"):
            self.gluster("volume", "set", self.volume, option, "off")
        self.gluster("volume", "start", self.volume)
        self.started = True
        return self

    def log_tail(self, n=30):
        path = os.path.join(self.log_dir, "glusterd.log")
        try:
            with open(path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        """Stops and deletes the volume, then glusterd (by pid); the holder's teardown kills
        whatever is left in the storage namespaces (the brick process)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if self.started:
                self.gluster("volume", "stop", self.volume, "force", check=False)
            if self.created:
                self.gluster("volume", "delete", self.volume, check=False)
        proc.stop_process(self.proc)
        self.proc = None


def mount(node, server, mountpoint, log_file, timeout=60):
    """FUSE-mounts the server's volume at `mountpoint` inside `node` (a twonode.NsHolder)."""
    os.makedirs(mountpoint, mode=0o755, exist_ok=True)
    # No kernel attribute or entry caching either (the FUSE defaults cache them for 1 s).
    r = node.run(["mount", "-t", "glusterfs", "-o",
                  f"log-file={log_file},attribute-timeout=0,entry-timeout=0",
                  f"{server.address}:/{server.volume}", mountpoint], timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"mounting {server.address}:/{server.volume} on {mountpoint} in "
                             f"{node.name} failed: {r.stderr}\n{_tail(log_file)}")


def unmount(node, mountpoint):
    node.run(["umount", "-l", mountpoint], timeout=30)


def _tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def is_mounted(node, mountpoint):
    r = node.run(["findmnt", "-n", "-t", "fuse.glusterfs", mountpoint], timeout=10)
    return r.returncode == 0 and bool(r.stdout.strip())

