"""Tenant-controlled paths: the node decides where root writes, owners scope keys, the
shared work directory cannot be swapped, deletes stay inside the store (issue 12, items
1, 2, 5, 6). Each attack beside the legitimate flow it must not break.

- ARCH_CHECKPOINT_HOST_PATH / ARCH_SHAREDFS_HOST_PATH outside the allowed roots (a host
  directory, a tenant-writable directory): the create is refused with the reason in the
  engine's log, and nothing is created or chmod'ed there.
- A symlink planted at work/<owner>/<key> (or a level above): no host path is mounted into
  the container; runc mounts ARCH's root-only bind of the opened work directory, which a
  later swap of the shared path cannot change.
- Two Kubernetes-style tenants (pod namespaces team-a and team-b, same ARCH_JOB_ID): the
  second starts fresh, the first's rescheduled container resumes.
- Exit-0 cleanup of a key holding a bind mount and a symlink to a victim directory: the
  victim's files survive.
"""

import os
import secrets
import shutil
import subprocess
import tempfile

import pytest

from archtest import checkpoint, daemons, proc, workloads
from archtest.checkpoint import CtrContainers

from test_archd import make_archd  # noqa: F401  (a fixture)
from test_job_identity import (archd_exits, counting_job, job_env, shared,  # noqa: F401
                               wait_exit_record)


def refused(c, cid, argv, env):
    """Runs `cid` expecting the create to fail; returns the engine's log text for it."""
    r = c.run(cid, argv, env=env, check=False)
    assert r.returncode != 0, f"the create of {cid} was not refused\n{c.diagnostics(cid)}"
    assert c.status(cid) != "RUNNING"
    log = c.node.log_file
    return r.stderr + "\n" + (open(log, errors="replace").read() if os.path.exists(log) else "")


def tree_of(path):
    """Every entry below `path` with its mode and owner (what an attack could change)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames + [""]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[p] = (st.st_mode, st.st_uid, st.st_gid)
    return out


@pytest.fixture
def outside_dir():
    """A tenant-writable directory outside every allowed root (as a volume would be)."""
    path = tempfile.mkdtemp(prefix="arch-tenant-", dir="/var/tmp")
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def victim(e2e_dir):
    """A host directory with a file an attacker wants to read or delete."""
    path = tempfile.mkdtemp(prefix="victim-", dir=e2e_dir)
    os.chmod(path, 0o755)
    with open(os.path.join(path, "host-secret"), "w") as f:
        f.write("host data\n")
    yield path
    daemons.unmount_all_under(path)
    shutil.rmtree(path, ignore_errors=True)


# ---- (a) paths outside the allowed roots

@pytest.mark.parametrize("variable", ["ARCH_CHECKPOINT_HOST_PATH", "ARCH_SHAREDFS_HOST_PATH"])
def test_paths_outside_the_allowed_roots_are_refused(ctr_containers, outside_dir, e2e_dir,
                                                     variable):
    c = ctr_containers
    etc_target = f"/etc/arch-attack-{secrets.token_hex(3)}"
    writable = tempfile.mkdtemp(prefix="tenant-writable-", dir=e2e_dir)
    os.chmod(writable, 0o777)  # under an allowed root, but a tenant could change it
    before = tree_of(outside_dir), tree_of(writable)
    try:
        for target in (etc_target, outside_dir, writable):
            cid = checkpoint.new_id("out")
            env = [f"{variable}={target}", f"ARCH_JOB_ID={cid}"]
            if variable == "ARCH_SHAREDFS_HOST_PATH":
                env.append("ARCH_WORKDIR_CONTAINER_PATH=/work")
            log = refused(c, cid, workloads.counter("/data/n.txt"), env)
            if target == writable:
                assert "writable by group or others" in log, log[-3000:]
            else:
                assert "not an allowed store root" in log, log[-3000:]
            c.remove(cid)
        assert not os.path.exists(etc_target), f"{etc_target} was created"
        assert (tree_of(outside_dir), tree_of(writable)) == before, "a refused path was changed"
    finally:
        shutil.rmtree(writable, ignore_errors=True)

    # Legitimate: a directory under an allowed root, by path and by name, works.
    store = tempfile.mkdtemp(prefix="store-", dir=e2e_dir)
    cid = checkpoint.new_id("ok")
    c.run(cid, workloads.counter("/data/n.txt"), env=[f"ARCH_CHECKPOINT_HOST_PATH={store}"],
          store=store)
    c.wait_lines(cid, "/data/n.txt", 3, workloads.parse_counter)
    out = c.checkpoint(cid)
    assert out["checkpoint"].startswith(os.path.join(store, c.ns, cid) + "/ckpt-"), out
    cid2 = checkpoint.new_id("named")
    c.run(cid2, workloads.counter("/data/n.txt"), env=["ARCH_STORE=e2e"], store=e2e_dir)
    listed = {x["id"]: x for x in c.archctl.json("container", "list")}
    assert listed[cid2]["store"] == e2e_dir and listed[cid2]["owner"] == c.ns, listed[cid2]


# ---- (b) a symlink in the shared work directory's path

@pytest.mark.parametrize("level", ["key", "owner"])
def test_symlinked_work_dir_is_never_mounted(ctr_containers, shared, victim, level):
    c = ctr_containers
    job = checkpoint.new_id("swap")
    owner_dir = os.path.join(shared, "work", c.ns)
    os.makedirs(os.path.join(shared, "work"), mode=0o711, exist_ok=True)
    if level == "key":
        os.makedirs(owner_dir, mode=0o711, exist_ok=True)
        os.symlink(victim, os.path.join(owner_dir, job))
    else:
        os.symlink(victim, owner_dir)
    before = tree_of(victim)
    cid = checkpoint.new_id("swap")
    log = refused(c, cid, counting_job(), job_env(job, shared))
    assert "symlink" in log, log[-3000:]
    c.remove(cid)
    assert tree_of(victim) == before, "the victim directory was changed"
    assert not daemons.mounts_under(victim)

    # Legitimate: with a real directory the job runs in its work directory, which runc
    # mounts from ARCH's state dir; swapping the shared path afterwards changes nothing.
    os.unlink(os.path.join(owner_dir, job) if level == "key" else owner_dir)
    cid = checkpoint.new_id("real")
    c.run(cid, counting_job(), env=job_env(job, shared))
    c.wait_lines(cid, "/data/n.txt", 3, workloads.parse_counter)
    bundle_spec = open(os.path.join(c.bundle(cid), "config.json")).read()
    assert os.path.join(c.node.state, "mounts") in bundle_spec, "runc mounts the shared path"
    assert os.path.join(shared, "work") not in bundle_spec, "runc mounts the shared path"
    workdir = os.path.join(shared, "work", c.ns, job)
    os.rename(workdir, workdir + ".moved")
    os.symlink(victim, workdir)
    listing = c.exec(cid, "ls", "/work").stdout
    assert "host-secret" not in listing and "out.txt" in listing, listing
    c.remove(cid)
    leftovers = daemons.mounts_under(os.path.join(c.node.state, "mounts"))
    assert not leftovers, f"the work directory's bind stayed after the delete: {leftovers}"


# ---- (c) two Kubernetes tenants with the same key

class K8sContainers(CtrContainers):
    """ctr containers in containerd namespace k8s.io with CRI-style annotations."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.annotations = {}

    def run_argv(self, cid, argv, env=(), image=None):
        args = super().run_argv(cid, argv, env, image)
        at = args.index("run") + 1
        for name, value in self.annotations.get(cid, {}).items():
            args[at:at] = ["--annotation", f"{name}={value}"]
        return args


@pytest.fixture
def k8s_containers(ctr_workloads, workload_image, archctl_cli, node_config):
    from conftest import CtrEnv, arch_runc_path
    env = CtrEnv(ctr_workloads.ctd, "k8s.io", ctr_workloads.image, ctr_workloads.runc_root,
                 ctr_workloads.base)
    env.ctr("images", "import", workload_image.oci, check=True, timeout=120)
    containers = K8sContainers(env, workload_image.name, arch_runc_path(), archctl_cli,
                               node_config)
    yield containers
    left = containers.cleanup()
    daemons.remove_cgroup_parent("k8s.io")
    assert not left, f"processes were left in the containers' cgroups (killed): {left}"


def test_two_kubernetes_tenants_with_one_key(k8s_containers, shared):
    c = k8s_containers
    job = checkpoint.new_id("shared-key")
    a1, b1, a2 = (checkpoint.new_id(x) for x in ("a1", "b1", "a2"))
    pod = {"io.kubernetes.cri.sandbox-name": "web-0", "io.kubernetes.cri.container-name": "app"}
    c.annotations[a1] = dict(pod, **{"io.kubernetes.cri.sandbox-namespace": "team-a"})
    c.annotations[a2] = c.annotations[a1]
    c.annotations[b1] = dict(pod, **{"io.kubernetes.cri.sandbox-namespace": "team-b"})

    c.run(a1, counting_job(), env=job_env(job, shared))
    _, values = c.wait_lines(a1, "/data/n.txt", 8, workloads.parse_counter)
    listed = {x["id"]: x for x in c.archctl.json("container", "list")}
    assert listed[a1]["owner"] == "k8s.io+team-a", listed[a1]
    out = c.checkpoint(a1)
    key_dir = os.path.join(shared, "checkpoint", "k8s.io+team-a", job)
    assert out["checkpoint"].startswith(key_dir + "/ckpt-"), out
    c.remove(a1)
    uuid0, _ = workloads.parse_counter(
        checkpoint.diff_member(out["checkpoint"], "/data/n.txt").decode())

    # Tenant B names the same key: it starts fresh and cannot see A's work directory.
    c.run(b1, counting_job(), env=job_env(job, shared))
    uuid_b, _ = c.wait_lines(b1, "/data/n.txt", 3, workloads.parse_counter)
    assert uuid_b != uuid0, "tenant B was restored from tenant A's checkpoint"
    assert not any("restored from" in m for m in c.log_messages(b1))
    listing = c.exec(b1, "ls", "/work").stdout.split()
    assert listing == ["out.txt"] and os.path.isdir(
        os.path.join(shared, "work", "k8s.io+team-b", job)), listing
    c.remove(b1)

    # Tenant A's job, rescheduled under a new container id, resumes.
    c.run(a2, counting_job(), env=job_env(job, shared))
    c.assert_restored(a2, out["checkpoint"])
    uuid, _ = c.wait_lines(a2, "/data/n.txt", len(values) + 3, workloads.parse_counter)
    assert uuid == uuid0, "tenant A's job did not resume"
    c.remove(a2)
    for owner in ("k8s.io+team-a", "k8s.io+team-b"):
        shutil.rmtree(os.path.join(shared, "checkpoint", owner), ignore_errors=True)


# ---- (d) exit-0 cleanup and a store holding a mount point or a symlink

def test_exit_zero_cleanup_stays_inside_the_store(ctr_containers, shared, victim, archd_exits):
    c = ctr_containers
    job = checkpoint.new_id("done")
    first, second = checkpoint.new_id("a"), checkpoint.new_id("b")
    argv = counting_job(limit=60, code=0)
    c.run(first, argv, env=job_env(job, shared))
    c.wait_lines(first, "/data/n.txt", 5, workloads.parse_counter)
    out = c.checkpoint(first)
    assert c.delete(first) == 137
    key_dir = os.path.join(shared, "checkpoint", c.ns, job)
    # Planted in the key's directory: a bind mount of the victim and a symlink to it.
    bound = os.path.join(key_dir, "failed-bound")
    os.mkdir(bound, 0o700)
    subprocess.run(["mount", "--bind", victim, bound], check=True)
    os.symlink(victim, os.path.join(key_dir, "failed-link"))
    before = tree_of(victim)
    try:
        c.run(second, argv, env=job_env(job, shared))
        c.assert_restored(second, out["checkpoint"])
        assert wait_exit_record(archd_exits, c.ns, second) == 0
        assert c.delete(second) == 0
        assert tree_of(victim) == before, "the exit-0 cleanup deleted outside the store"
    finally:
        subprocess.run(["umount", "-l", bound], capture_output=True)
    # The cleanup stopped at the mount point: the key is still there (the legitimate
    # exit-0 cleanup is test_job_identity.py::test_exit_zero_removes_checkpoints_...).
    assert os.path.isdir(key_dir)
    os.rmdir(bound)
    shutil.rmtree(key_dir, ignore_errors=True)
    assert tree_of(victim) == before


# ---- (e) the work directory swapped between ARCH's check and runc's mount

def variant_runtime(e2e_dir, node_config, name, runc=None, on_disallowed=None):
    """arch-runc with its own node config (the session's, but for `runc` and
    `on_disallowed`), as a runtime binary for ctr (--runc-binary)."""
    from conftest import arch_runc_path
    directory = os.path.join(e2e_dir, f"etc-arch-{name}")
    path = daemons.write_node_config(directory, node_config.log_file,
                                     runc=runc or node_config.runc, criu=node_config.criu,
                                     store=node_config.store, state=node_config.state,
                                     keys=node_config.keys, roots=node_config.roots,
                                     on_disallowed=on_disallowed)
    return daemons.config_wrapper(os.path.join(directory, "arch-runc"), path, arch_runc_path())


@pytest.fixture
def variant_containers(ctr_workloads, workload_image, archctl_cli, node_config):
    """Makes CtrContainers whose runtime is a given arch-runc wrapper; all removed after."""
    made = []

    def make(runtime):
        c = CtrContainers(ctr_workloads, workload_image.name, runtime, archctl_cli, node_config)
        made.append(c)
        return c

    yield make
    left = {}
    for c in made:
        left.update(c.cleanup())
    assert not left, f"processes were left in the containers' cgroups (killed): {left}"


def test_work_dir_swapped_after_the_check_is_not_mounted(variant_containers, node_config,
                                                          e2e_dir, shared, victim):
    from conftest import NAMESPACE
    job = checkpoint.new_id("race")
    workdir = os.path.join(shared, "work", NAMESPACE, job)
    marker = os.path.join(e2e_dir, f"swapped-{job}")
    # The "real runc" of this node: on create, after ARCH checked and opened the work
    # directory, the tenant swaps it for a symlink to a host directory, then runc runs.
    swap_runc = daemons.write_script(os.path.join(e2e_dir, f"swap-runc-{job}", "runc"), f"""
for a in "$@"; do
  if [ "$a" = create ] && [ -d {workdir} ] && [ ! -L {workdir} ]; then
    mv {workdir} {workdir}.moved && ln -s {victim} {workdir} && echo swapped > {marker}
  fi
done
exec {daemons.RUNC} "$@"
""")
    c = variant_containers(variant_runtime(e2e_dir, node_config, f"swap-{job}", runc=swap_runc))
    before = tree_of(victim)
    cid = checkpoint.new_id("race")
    c.run(cid, counting_job(), env=job_env(job, shared))
    c.wait_lines(cid, "/data/n.txt", 3, workloads.parse_counter)
    assert os.path.exists(marker), "the wrapper did not swap the work directory"
    assert os.path.islink(workdir)

    # The container has its own work directory (the one ARCH opened, now renamed on the
    # host), never the host directory the symlink names.
    listing = c.exec(cid, "ls", "-a", "/work").stdout.split()
    assert "host-secret" not in listing, f"a host directory was mounted: {listing}"
    assert "out.txt" in listing, listing
    proc.wait_until(lambda: os.path.exists(os.path.join(workdir + ".moved", "out.txt")), 10,
                    "the job to write into its own work directory")
    mountinfo = c.exec(cid, "cat", "/proc/self/mountinfo").stdout
    work_lines = [ln for ln in mountinfo.splitlines() if ln.split()[4] == "/work"]
    assert len(work_lines) == 1, mountinfo
    assert victim not in mountinfo, f"the host directory is mounted:\n{work_lines}"
    c.exec(cid, "sh", "-c", "echo from-container > /work/probe")
    assert not os.path.exists(os.path.join(victim, "probe"))
    assert tree_of(victim) == before, "the host directory was changed"
    c.remove(cid)
    assert not daemons.mounts_under(victim)


# ---- (f) [store] on_disallowed: fail (default) or unmanaged

def test_on_disallowed_fail_or_unmanaged(ctr_containers, variant_containers, node_config,
                                         e2e_dir, outside_dir):
    argv = workloads.counter("/data/n.txt")
    before = tree_of(outside_dir)

    # fail (the session's config): the create fails with the permission error.
    c = ctr_containers
    cid = checkpoint.new_id("disallowed-fail")
    log = refused(c, cid, argv, [f"ARCH_CHECKPOINT_HOST_PATH={outside_dir}",
                                 f"ARCH_JOB_ID={cid}"])
    assert "not an allowed store root" in log, log[-3000:]
    c.remove(cid)

    # unmanaged: the container runs, without ARCH: not registered, not checkpointable,
    # the refusal in the node's log.
    u = variant_containers(variant_runtime(e2e_dir, node_config, "unmanaged",
                                           on_disallowed="unmanaged"))
    cid = checkpoint.new_id("disallowed-unmanaged")
    u.run(cid, argv, env=[f"ARCH_CHECKPOINT_HOST_PATH={outside_dir}", f"ARCH_JOB_ID={cid}"])
    u.wait_lines(cid, "/data/n.txt", 3, workloads.parse_counter)
    assert u.status(cid) == "RUNNING"
    listed = [x["id"] for x in u.archctl.json("container", "list")]
    assert cid not in listed, "an unmanaged container was registered"
    r = u.archctl.run("container", "checkpoint", f"{u.ns}/{cid}", "-o", "json")
    assert r.returncode != 0, f"an unmanaged container was checkpointed: {r.stdout}"
    # The engine's runc log for the container (the shim's --log) has the warning.
    warned = [m for m in u.log_messages(cid) if f"container {cid} runs unmanaged" in m]
    assert warned and "not an allowed store root" in warned[0], u.diagnostics(cid)
    assert u.read(cid, "/data/n.txt") is not None
    assert tree_of(outside_dir) == before, "the disallowed path was changed"
    assert not os.path.exists(os.path.join(node_config.store, u.ns, cid))
