"""Session fixtures for ARCH's end-to-end tests.

They build a busybox test image, start a private containerd (CRI off, own root, state
and socket, ARCH_CONFIG pointing at a debug-level node config) and a private dockerd
on top of it, and stop both at the end with everything they ran removed.  Tests that
need root, the daemons, or the arch-runc binary skip with the reason when it is missing.

Environment:
  ARCH_BUILD_DIR   CMake build directory holding src/shim/arch-runc (default <repo>/build)
"""

import dataclasses
import os
import secrets
import shutil
import sys
from typing import Optional

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
pytest.register_assert_rewrite("archtest")

from archtest import (capture, checkpoint, daemons, image, matrix,  # noqa: E402
                      runtime_log, workloads)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Per-session names: containers of concurrent sessions (ctest -j) never share a
# containerd namespace or a parent cgroup (ctr puts a task in cgroup /<namespace>/<id>).
SESSION = secrets.token_hex(3)
NAMESPACE = f"arch-e2e-{SESSION}"
DOCKER_CGROUP_PARENT = f"arch-e2e-docker-{SESSION}"


def build_dir():
    return os.environ.get("ARCH_BUILD_DIR") or os.path.join(REPO, "build")


def arch_runc_path():
    return os.path.join(build_dir(), "src", "shim", "arch-runc")


def _missing(paths):
    return [p for p in paths if not (os.path.isfile(p) and os.access(p, os.X_OK))]


def skip_unless_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (runs containers with runc, containerd and dockerd)")


def skip_unless_binaries(*paths):
    missing = _missing(paths)
    if missing:
        pytest.skip("missing: " + ", ".join(missing))


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory):
    # pytest's per-run tmp dir: root-owned, mode 0700 (arch-runc accepts a config in it)
    return str(tmp_path_factory.mktemp("arch-e2e"))


@pytest.fixture(scope="session")
def arch_runc():
    """Path of the built arch-runc, or None when it is not built."""
    path = arch_runc_path()
    return path if not _missing([path]) else None


@pytest.fixture
def require_arch_runc(arch_runc):
    if arch_runc is None:
        pytest.skip(f"arch-runc is not built: {arch_runc_path()} missing "
                    "(build with `cmake --build build` or set ARCH_BUILD_DIR)")
    return arch_runc


@pytest.fixture(scope="session")
def runtimes(arch_runc):
    return {
        "runc": matrix.Runtime("runc", binary=None, docker_runtime=None),
        "arch-runc": (matrix.Runtime("arch-runc", binary=arch_runc, docker_runtime="arch")
                      if arch_runc else None),
    }


@dataclasses.dataclass
class NodeConfig:
    path: str
    log_file: str
    runc: str
    criu: Optional[str] = None   # [runtime] criu, when a CRIU was found
    store: Optional[str] = None  # [store] path: the session's private checkpoint store
    state: Optional[str] = None  # [state] dir: the session's private container registry
    keys: Optional[str] = None   # [keys] dir: the session's node key (one key)
    # [roots]: allowed store roots (name -> path). The session's temp dir is one, so tests'
    # ARCH_CHECKPOINT_HOST_PATH / ARCH_SHAREDFS_HOST_PATH directories below it are allowed.
    roots: dict = dataclasses.field(default_factory=dict)


def criu_path():
    """The CRIU ARCH's setup installs (ARCH_CRIU_PREFIX, default /opt/arch/criu), or None."""
    prefix = os.environ.get("ARCH_CRIU_PREFIX") or "/opt/arch/criu"
    path = os.path.join(prefix, "bin", "criu")
    return None if _missing([path]) else path


@pytest.fixture(scope="session")
def node_config(e2e_dir):
    if os.geteuid() != 0:
        pytest.skip("needs root (arch-runc only reads a root-owned node config)")
    log_file = os.path.join(e2e_dir, "arch.log")
    store = os.path.join(e2e_dir, "store")
    state = os.path.join(e2e_dir, "arch-state")
    keys, _ = daemons.make_key_dir(os.path.join(e2e_dir, "keys"))
    roots = {"e2e": e2e_dir}
    path = daemons.write_node_config(os.path.join(e2e_dir, "etc-arch"), log_file,
                                     criu=criu_path(), store=store, state=state, keys=keys,
                                     roots=roots, group_wait=8)
    return NodeConfig(path, log_file, daemons.RUNC, criu_path(), store, state, keys, roots)


@pytest.fixture(scope="session")
def image_archives(e2e_dir):
    if _missing([image.BUSYBOX]):
        pytest.skip(f"{image.BUSYBOX} (busybox-static) is missing")
    out = os.path.join(e2e_dir, "images")
    os.makedirs(out)
    return image.build_archives(out)


@dataclasses.dataclass
class Wrapper:
    path: str
    log: str


@pytest.fixture(scope="session")
def capture_wrappers(e2e_dir):
    out = os.path.join(e2e_dir, "capture")
    os.makedirs(out)
    wrappers = {}
    for name in ("containerd", "dockerd"):
        w = Wrapper(os.path.join(out, f"capture-{name}"), os.path.join(out, f"{name}.calls"))
        capture.write_wrapper(w.path, w.log)
        wrappers[name] = w
    return wrappers


@dataclasses.dataclass
class CtrEnv:
    ctd: daemons.Containerd
    ns: str
    image: str
    runc_root: str
    base: str

    def ctr(self, *args, **kw):
        return self.ctd.ctr(*args, ns=self.ns, **kw)

    def argv(self, *args):
        return self.ctd.ctr_argv(*args, ns=self.ns)

    def tap(self):
        return runtime_log.BundleLogTap(self.ctd.task_dir(self.ns),
                                        matrix.keep_dir_for(self.base))

    def rootfs(self, cid):
        return os.path.join(self.ctd.task_dir(self.ns), cid, "rootfs")


@pytest.fixture(scope="session")
def containerd_env(e2e_dir, node_config, image_archives):
    skip_unless_root()
    skip_unless_binaries(daemons.RUNC, daemons.CONTAINERD, daemons.CTR, daemons.SHIM)
    base = os.path.join(e2e_dir, "containerd")
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ctd = daemons.Containerd(base, env={"ARCH_CONFIG": node_config.path, "PATH": path})
    try:
        ctd.start()
        ctd.ctr("images", "import", image_archives[0], ns=NAMESPACE, check=True, timeout=120)
        runc_root = os.path.join(e2e_dir, "runc-root")
        os.makedirs(runc_root, mode=0o700)
        yield CtrEnv(ctd, NAMESPACE, image.IMAGE_NAME, runc_root, e2e_dir)
    finally:
        ctd.stop()
        daemons.remove_cgroup_parent(NAMESPACE)
    leftovers = daemons.mounts_under(e2e_dir)
    assert not leftovers, f"mounts left behind: {leftovers}"


@dataclasses.dataclass
class DockerEnv:
    dockerd: daemons.Dockerd
    ctd: daemons.Containerd
    image: str
    base: str

    def docker(self, *args, **kw):
        return self.dockerd.cli(*args, **kw)

    def argv(self, *args):
        return self.dockerd.argv(*args)

    def tap(self):
        return runtime_log.BundleLogTap(self.ctd.task_dir("moby"), matrix.keep_dir_for(self.base))


def ecs_config_path(e2e_dir):
    """The node config of the session dockerd's "arch-ecs" runtime ([owners] ecs = true)."""
    return os.path.join(e2e_dir, "etc-arch-ecs", "arch.conf")


@pytest.fixture(scope="session")
def docker_env(e2e_dir, containerd_env, image_archives, capture_wrappers):
    skip_unless_binaries(daemons.DOCKERD, daemons.docker_client() or "docker")
    runtimes = {"capture": capture_wrappers["dockerd"].path, "arch": arch_runc_path(),
                # arch-runc with the node config ECS tests write (test_ecs_owners.py)
                "arch-ecs": daemons.config_wrapper(os.path.join(e2e_dir, "arch-ecs-runc"),
                                                   ecs_config_path(e2e_dir), arch_runc_path())}
    dockerd = daemons.Dockerd(os.path.join(e2e_dir, "dockerd"), containerd_env.ctd, runtimes,
                              DOCKER_CGROUP_PARENT)
    try:
        dockerd.start()
        dockerd.cli("load", "-i", image_archives[1], check=True, timeout=120)
        yield DockerEnv(dockerd, containerd_env.ctd, image.IMAGE_NAME, e2e_dir)
    finally:
        dockerd.stop()


# ---------------------------------------------------------------- checkpoint tests

def archctl_path():
    return os.path.join(build_dir(), "src", "cli", "archctl")


def archd_path():
    return os.path.join(build_dir(), "src", "agent", "archd")


@pytest.fixture
def archctl_bin():
    """The built archctl's path (the test is skipped when it is not built)."""
    path = archctl_path()
    if not os.access(path, os.X_OK):
        pytest.skip(f"archctl is not built: {path}")
    return path


@dataclasses.dataclass
class WorkloadImage:
    name: str
    oci: str
    docker: str
    program: str  # the static archtest binary (host path)


@pytest.fixture(scope="session")
def workload_image(e2e_dir):
    """The busybox image plus the static `archtest` workloads (archtest/workloads.py)."""
    if _missing([image.BUSYBOX]):
        pytest.skip(f"{image.BUSYBOX} (busybox-static) is missing")
    if not shutil.which("cc"):
        pytest.skip("no C compiler (cc) for the static test programs")
    out = os.path.join(e2e_dir, "workloads")
    os.makedirs(out)
    program = workloads.compile_program(out)
    oci, docker = workloads.build_image(out, program)
    return WorkloadImage(workloads.IMAGE_NAME, oci, docker, program)


@pytest.fixture(scope="session")
def archctl_cli(node_config, arch_runc):
    """archctl with the session's node config; skips unless ARCH's binaries and CRIU exist."""
    skip_unless_root()
    shim_dir = os.path.dirname(arch_runc_path())
    skip_unless_binaries(arch_runc_path(), os.path.join(shim_dir, "arch-runc-helper"),
                         archctl_path())
    if node_config.criu is None:
        pytest.skip("no CRIU at $ARCH_CRIU_PREFIX/bin/criu (scripts/install-criu.sh installs it)")
    return checkpoint.Archctl(archctl_path(), node_config.path)


@pytest.fixture(scope="session")
def ctr_workloads(containerd_env, workload_image, archctl_cli):
    """containerd_env with the workload image imported."""
    containerd_env.ctr("images", "import", workload_image.oci, check=True, timeout=120)
    return containerd_env


def _finish(containers):
    left = containers.cleanup()
    assert not left, f"processes were left in the containers' cgroups (killed): {left}"


@pytest.fixture
def ctr_containers(ctr_workloads, workload_image, archctl_cli, node_config):
    """Per test: ARCH-enabled containerd containers, all removed afterwards."""
    containers = checkpoint.CtrContainers(ctr_workloads, workload_image.name, arch_runc_path(),
                                          archctl_cli, node_config)
    yield containers
    _finish(containers)


@pytest.fixture(scope="session")
def docker_workloads(docker_env, workload_image, archctl_cli):
    docker_env.docker("load", "-i", workload_image.docker, check=True, timeout=120)
    return docker_env


@pytest.fixture
def docker_containers(docker_workloads, workload_image, archctl_cli, node_config):
    """Per test: ARCH-enabled Docker containers (runtime arch), all removed afterwards."""
    containers = checkpoint.DockerContainers(docker_workloads, workload_image.name, archctl_cli,
                                             node_config, DOCKER_CGROUP_PARENT)
    yield containers
    _finish(containers)
