"""Real programs from Debian packages, checkpointed and restored by ARCH (issue 13 item 8).

The image (archtest/realimage.py: debootstrap'ed Debian 12 with redis, nginx, python3,
numpy, node.js, a JVM, sqlite3, fio ...) is built once and cached under
/var/cache/arch-test; scripts/setup.sh builds it in the background while ARCH compiles
(ARCH_TEST_IMAGE=1, which scripts/test.sh sets), and a session that finds no cached image
builds it here. Each workload (archtest/realworkloads.py) runs in an ARCH-enabled container
under the session's containerd with arch-runc, is given state, is checkpointed with
`archctl container checkpoint`, ends, is removed, is run again with the same id (= job key)
and must come back with its own state: redis's keys, the page nginx and python's
http.server serve (from inside the container's own network namespace), numpy's array
checksum, the node.js / JVM / shell-pipeline counters and sqlite's rows without gap or
repeat, the flock held, a 32 MiB deleted-but-open file intact. io_uring cannot be dumped:
the checkpoint must fail and leave the container running.

Cases that fail on main because of known gaps of issue 13 are strict xfails naming the
item; the lead flips them as those branches merge. SQLite with its database in the writable
layer is a non-strict xfail: it fails when the restored file gets a new inode number (most
runs here), which SQLite takes for a moved database and refuses to write.
"""

import os
import shutil

import pytest

from archtest import checkpoint, proc, realimage, realworkloads
from conftest import DOCKER_CGROUP_PARENT, arch_runc_path

WORKLOADS = realworkloads.all_workloads()


@pytest.fixture(scope="session")
def real_image_dir():
    """The cache directory of the real-workload image (built here when not cached)."""
    if os.environ.get("ARCH_SKIP_REAL_IMAGE"):
        pytest.skip("ARCH_SKIP_REAL_IMAGE is set")
    d = realimage.cached()
    if d is None:
        if os.geteuid() != 0 or not shutil.which("debootstrap"):
            pytest.skip("no cached real-workload image and no root + debootstrap to build it "
                        "(scripts/setup.sh installs it)")
        try:
            d = realimage.build()
        except Exception as e:  # no mirror reachable, full disk ...
            pytest.skip(f"building the real-workload image failed: {e}")
    return d


@pytest.fixture(scope="session")
def real_image(containerd_env, real_image_dir, archctl_cli):
    """The real-workload image, imported into the session's containerd."""
    containerd_env.ctr("images", "import", realimage.oci_archive(real_image_dir), check=True,
                       timeout=900)
    return realimage.IMAGE_NAME


class RealContainers(checkpoint.CtrContainers):
    """CtrContainers whose containers may get a host directory bind-mounted (a volume)."""

    def __init__(self, *args, volume_root):
        super().__init__(*args)
        self.volume_root = volume_root


@pytest.fixture
def real(containerd_env, real_image, archctl_cli, node_config, tmp_path):
    containers = RealContainers(containerd_env, real_image, arch_runc_path(), archctl_cli,
                                node_config, volume_root=str(tmp_path))
    yield containers
    left = containers.cleanup()
    assert not left, f"processes were left in the containers' cgroups (killed): {left}"


def exec_in(c, cid):
    def run(argv, timeout):
        r = c.exec(cid, *argv, check=False, timeout=timeout)
        return r.returncode, r.stdout, r.stderr
    return run


def start(c, cid, w):
    if w.volume:
        c.binds[cid] = (os.path.join(c.volume_root, cid), w.volume)
    c.run(cid, w.argv())
    try:
        proc.wait_until(lambda: w.ready(exec_in(c, cid)), 120, f"{w.name} to be ready",
                        interval=0.2)
    except proc.WaitTimeout as e:
        raise AssertionError(f"{e}\n{c.diagnostics(cid)}")


def checkpoint_and_rerun(c, cid, w):
    out = c.checkpoint(cid)
    assert c.delete(cid) == 137, "a checkpointed container ends with SIGKILL's status 137"
    c.run(cid, w.argv())
    c.assert_restored(cid, out["checkpoint"])
    return out["checkpoint"]


def _params():
    out = []
    for w in WORKLOADS:
        if w.expect_dump_failure:
            continue
        marks = ([pytest.mark.xfail(strict=w.xfail_strict, reason=w.xfail_arch)]
                 if w.xfail_arch else [])
        out.append(pytest.param(w, id=w.name, marks=marks))
    return out


@pytest.mark.parametrize("w", _params())
def test_workload_resumes_with_its_state(real, w):
    c, cid = real, checkpoint.new_id("real-" + w.name.replace("_", "-"))
    start(c, cid, w)
    state = w.prepare(exec_in(c, cid))
    ckpt = checkpoint_and_rerun(c, cid, w)
    try:
        w.verify(exec_in(c, cid), state)
    except AssertionError as e:
        raise AssertionError(f"{w.name} after the restore: {e}\n{c.diagnostics(cid, ckpt)}")


def test_restored_loopback_is_up(real):
    """The container's own network namespace comes back with loopback up (what every
    server above needs to answer)."""
    w = realworkloads.by_name("pipeline")
    c, cid = real, checkpoint.new_id("real-lo")
    start(c, cid, w)
    before = c.exec(cid, "cat", "/sys/class/net/lo/operstate").stdout.strip()
    assert before == "unknown", f"loopback before the checkpoint: {before}"  # lo: up = unknown
    checkpoint_and_rerun(c, cid, w)
    flags = c.exec(cid, "ip", "-o", "link", "show", "lo").stdout
    assert ",UP" in flags or "<UP" in flags, f"loopback is down after the restore: {flags}"



def _io_uring_checkpoint(c, cid):
    w = realworkloads.by_name("io_uring")
    start(c, cid, w)
    r = c.archctl.run("container", "checkpoint", f"{c.ns}/{cid}", timeout=180)
    return r


def test_io_uring_fails_and_keeps_running(real):
    """CRIU cannot dump io_uring: the checkpoint fails, nothing is committed, and the
    container goes on running (fio still alive and answering)."""
    c, cid = real, checkpoint.new_id("real-uring")
    r = _io_uring_checkpoint(c, cid)
    assert r.returncode != 0, f"a checkpoint of an io_uring user succeeded: {r.stdout}"
    assert "io_uring" in r.stdout + r.stderr, f"the failure does not name io_uring: {r.stderr}"
    assert c.status(cid) == "RUNNING", c.status(cid)
    assert c.runc_status(cid) == "running", "the container was left frozen"
    assert c.exec(cid, "pgrep", "-x", "fio", check=False).returncode == 0, "fio is gone"
    assert [x for x in c.checkpoints(cid) if x["state"] == "committed"] == []


def test_io_uring_failure_is_one_clear_sentence(real):
    c, cid = real, checkpoint.new_id("real-uring-msg")
    r = _io_uring_checkpoint(c, cid)
    assert r.returncode != 0
    assert "io_uring" in r.stderr and "Unknown shit" not in r.stderr, r.stderr


def test_pipeline_checkpointed_five_times_in_a_row(real):
    """The freeze/seize loop in small (bench/freeze_seize_loop.py runs it 50+ times): a
    bash pipeline with background jobs, checkpointed and restored five times; the counter
    goes on without gap or repeat every time."""
    w = realworkloads.by_name("pipeline")
    c, cid = real, checkpoint.new_id("real-pipe5")
    start(c, cid, w)
    for _ in range(5):
        state = w.prepare(exec_in(c, cid))
        checkpoint_and_rerun(c, cid, w)
        w.verify(exec_in(c, cid), state)


def test_docker_nodejs_resumes(docker_env, real_image_dir, archctl_cli, node_config):
    """The same image under Docker (runtime arch): the node.js counter goes on."""
    docker_env.docker("load", "-i", realimage.docker_archive(real_image_dir), check=True,
                      timeout=900)
    c = checkpoint.DockerContainers(docker_env, realimage.IMAGE_NAME, archctl_cli, node_config,
                                    DOCKER_CGROUP_PARENT)
    w = realworkloads.by_name("nodejs")
    name = checkpoint.new_id("real-docker-node")

    def ex(argv, timeout):
        r = c.exec(name, *argv, check=False)
        return r.returncode, r.stdout, r.stderr

    try:
        c.run(name, w.argv())
        proc.wait_until(lambda: w.ready(ex), 120, "node.js to be ready", interval=0.2)
        state = w.prepare(ex)
        out = c.checkpoint(name)
        proc.wait_until(lambda: not c.state(name)["Running"], 30, f"{name} to stop")
        r = c.env.docker("start", name, timeout=120)
        assert r.returncode == 0, f"docker start {name}: {r.stderr}\n{c.diagnostics(name)}"
        c.assert_restored(name, out["checkpoint"])
        w.verify(ex, state)
    finally:
        left = c.cleanup()
    assert not left, f"processes were left in the containers' cgroups (killed): {left}"


def test_image_cache_is_keyed_and_never_trusts_a_partial_entry(tmp_path, monkeypatch):
    """The cache key follows the package list; an entry without its done marker (a build
    that was killed half way) or with a missing archive is not an image."""
    monkeypatch.setattr(realimage, "CACHE_ROOT", str(tmp_path))
    pkgs = realimage.PACKAGES
    assert realimage.cache_key(pkgs) == realimage.cache_key(tuple(reversed(pkgs)))
    assert realimage.cache_key(pkgs) != realimage.cache_key(pkgs + ("postgresql",))
    d = realimage.cache_dir(pkgs)
    os.makedirs(d)
    assert realimage.cached(pkgs) is None
    for name in (realimage.OCI_NAME, realimage.DOCKER_NAME):
        open(os.path.join(d, name), "w").close()
    assert realimage.cached(pkgs) is None, "an entry without done.json was trusted"
    open(os.path.join(d, realimage.DONE_NAME), "w").close()
    assert realimage.cached(pkgs) == d
    os.remove(os.path.join(d, realimage.DOCKER_NAME))
    assert realimage.cached(pkgs) is None, "an entry missing an archive was trusted"
