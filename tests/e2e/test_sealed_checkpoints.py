"""Sealed checkpoints and spec binding, end to end (private containerd, ctr, runc, CRIU).

- A checkpoint planted in the store with a recomputed manifest (unsealed, format 1, sealed
  with another node's key, or with files changed and digests recomputed without the key) is
  never restored: the container starts fresh, the planted one is moved aside with its reason.
- A checkpoint taken under one spec is not restored into a spec that grants more (an added
  capability) or less: refused naming the field; the checkpoint is kept (not its fault) and
  still restores into a container with its own spec.
- A checkpoint whose manifest was re-sealed by the key holder with another spec's digest
  (the images' credentials exceed the new spec) is refused after the restore: the restored
  tasks are killed, the checkpoint moved aside, the container starts fresh.
- A job archive with a recomputed manifest is refused by `archctl job restore --from`.
Beside each, the legitimate flow (checkpoint, new container id with the same job id,
restore) still works.
"""

import json
import os
import sys
import tempfile

import pytest

from conftest import archctl_path, build_dir, skip_unless_binaries, skip_unless_root
from archtest import checkpoint, proc, seal, workloads
from archtest.jobs import PY_JOB, Node, counts, pid_gone, wait_count

COUNT = "/data/count.txt"


def run_with(c, cid, env=(), flags=()):
    """ctr run of the counter with ARCH_ENABLE=1, `env` and extra ctr run `flags`."""
    argv = c.run_argv(cid, workloads.counter(COUNT), env)
    at = argv.index("-d") + 1
    argv[at:at] = list(flags)
    c.created[cid] = c.node.store
    r = proc.run(argv, timeout=60)
    assert r.returncode == 0, f"ctr run {cid} failed: {r.stderr}\n{c.diagnostics(cid)}"
    c.wait_status(cid, "RUNNING")


def checkpoint_job(c, cid, job, flags=()):
    """Runs the counter as `cid` with ARCH_JOB_ID=job, checkpoints it (it ends); returns
    (checkpoint dir, the counter's start uuid)."""
    run_with(c, cid, [f"ARCH_JOB_ID={job}"], flags)
    c.wait_lines(cid, COUNT, 10, workloads.parse_counter)
    ckpt = c.checkpoint(cid)["checkpoint"]
    assert c.delete(cid) == 137
    uuid = workloads.parse_counter(checkpoint.diff_member(ckpt, COUNT).decode())[0]
    return ckpt, uuid


def counter_text(c, cid, lines=3):
    def enough():
        if c.status(cid) != "RUNNING":
            raise AssertionError(f"{cid} is {c.status(cid)}\n{c.diagnostics(cid)}")
        text = c.read(cid, COUNT) or ""
        return text if len(workloads.complete_lines(text)) >= lines else None
    return proc.wait_until(enough, 30, f"{cid} to count")


def assert_fresh(c, cid, old_uuid):
    text = counter_text(c, cid)
    uuid, values = workloads.parse_counter(text)
    assert uuid != old_uuid, f"{cid} was restored from a refused checkpoint\n{c.diagnostics(cid)}"
    workloads.check_sequence(values, f"{cid}'s fresh counter")


def assert_resumed(c, cid, ckpt, old_uuid):
    c.assert_restored(cid, ckpt)
    uuid, values = workloads.parse_counter(counter_text(c, cid, 12))
    assert uuid == old_uuid, f"{cid} did not continue the checkpointed counter"


def listed(c, job):
    return c.archctl.checkpoints(c.ns, job)


def stop(c, cid):
    c.signal(cid, "SIGKILL")
    c.delete(cid)


def legit_flow(c, job, ckpt, uuid):
    """The checkpoint restores into a new container of the same job."""
    cid = checkpoint.new_id("legit")
    run_with(c, cid, [f"ARCH_JOB_ID={job}"])
    assert_resumed(c, cid, ckpt, uuid)
    stop(c, cid)


# ---------------------------------------------------------------- planted checkpoints

def plant_unsealed(ckpt, e2e_dir):
    doc = seal.read_manifest(ckpt)
    doc.pop("seal")
    return doc, "unsealed checkpoint (no seal)"


def plant_format1(ckpt, e2e_dir):
    doc = seal.read_manifest(ckpt)
    for field in ("seal", "spec", "encryption"):
        doc.pop(field)
    doc["format_version"] = 1
    return doc, "unsealed checkpoint (manifest format 1"


def plant_foreign_key(ckpt, e2e_dir):
    keys = seal.foreign_key_dir(tempfile.mkdtemp(prefix="foreign-keys-", dir=e2e_dir))
    return seal.seal(seal.read_manifest(ckpt), *seal.read_key(keys)), "does not hold"


def plant_recomputed_digests(ckpt, e2e_dir):
    """Files swapped and digests recomputed by someone without the key."""
    path = os.path.join(ckpt, "rootfs-diff.tar")
    with open(path, "ab") as f:
        f.write(b"\0" * 1024)
    return seal.recompute_files(seal.read_manifest(ckpt), ckpt), "MAC does not match"


@pytest.mark.parametrize("plant", [plant_unsealed, plant_format1, plant_foreign_key,
                                   plant_recomputed_digests], ids=lambda p: p.__name__[6:])
def test_planted_checkpoint_is_moved_aside_and_the_container_starts_fresh(
        ctr_containers, e2e_dir, plant):
    c, job = ctr_containers, checkpoint.new_id("planted")
    ckpt, uuid = checkpoint_job(c, checkpoint.new_id("src"), job)
    doc, reason_words = plant(ckpt, e2e_dir)
    seal.write_manifest(ckpt, doc)

    cid = checkpoint.new_id("victim")
    run_with(c, cid, [f"ARCH_JOB_ID={job}"])
    assert_fresh(c, cid, uuid)
    entries = listed(c, job)
    assert [x["state"] for x in entries] == ["failed"], entries
    assert reason_words in entries[0]["reason"], entries[0]["reason"]
    with open(os.path.join(entries[0]["path"], "reason.txt")) as f:
        assert "seal" in f.read()
    assert any("seal" in m for m in c.log_messages(cid)), c.log_messages(cid)

    # The legitimate flow: this container's own checkpoint restores under a new id.
    c.wait_lines(cid, COUNT, 5, workloads.parse_counter)
    ckpt2 = c.checkpoint(cid)["checkpoint"]
    assert c.delete(cid) == 137
    uuid2 = workloads.parse_counter(checkpoint.diff_member(ckpt2, COUNT).decode())[0]
    legit_flow(c, job, ckpt2, uuid2)


def test_checkpoint_without_a_node_key_fails_naming_key_init(ctr_containers, e2e_dir):
    c = ctr_containers
    directory = tempfile.mkdtemp(prefix="etc-arch-nokey-", dir=e2e_dir)
    with open(c.node.path) as f:
        text = f.read()
    conf = os.path.join(directory, "arch.conf")
    with open(conf, "w") as f:
        f.write(text + f"[keys]\ndir = {os.path.join(directory, 'no-keys')}\n")
    os.chmod(directory, 0o755)
    keyless = checkpoint.Archctl(c.archctl.path, conf)
    cid = checkpoint.new_id("nokey")
    run_with(c, cid)
    c.wait_lines(cid, COUNT, 3, workloads.parse_counter)
    r = keyless.run("container", "checkpoint", f"{c.ns}/{cid}", "-o", "json")
    assert r.returncode != 0 and "archctl key init" in r.stdout, (r.stdout, r.stderr)
    assert c.status(cid) == "RUNNING", "a checkpoint that cannot be sealed ended the container"
    assert listed(c, cid) == []
    stop(c, cid)


# ---------------------------------------------------------------- spec binding

@pytest.mark.parametrize("direction", ["more", "fewer"])
def test_restore_into_a_spec_with_other_privileges_is_refused_naming_the_field(
        ctr_containers, direction):
    c, job = ctr_containers, checkpoint.new_id("spec")
    added = ["--cap-add", "CAP_SYS_ADMIN"]
    at_checkpoint, at_restore = ((), added) if direction == "more" else (added, ())
    ckpt, uuid = checkpoint_job(c, checkpoint.new_id("src"), job, at_checkpoint)

    cid = checkpoint.new_id("other-spec")
    run_with(c, cid, [f"ARCH_JOB_ID={job}"], at_restore)
    assert_fresh(c, cid, uuid)
    errors = c.log_messages(cid, "error")
    assert any("spec differs" in m and "process.capabilities.bounding" in m for m in errors), (
        errors)
    # Not the checkpoint's fault: it stays, and restores into its own spec.
    assert [x["state"] for x in listed(c, job)] == ["committed"], listed(c, job)
    stop(c, cid)
    cid = checkpoint.new_id("same-spec")
    run_with(c, cid, [f"ARCH_JOB_ID={job}"], at_checkpoint)
    assert_resumed(c, cid, ckpt, uuid)
    stop(c, cid)


def test_spec_mismatch_with_restore_failure_fail_fails_the_create(ctr_containers):
    c, job = ctr_containers, checkpoint.new_id("specfail")
    checkpoint_job(c, checkpoint.new_id("src"), job)
    cid = checkpoint.new_id("refused")
    argv = c.run_argv(cid, workloads.counter(COUNT),
                      [f"ARCH_JOB_ID={job}", "ARCH_RESTORE_FAILURE=fail"])
    at = argv.index("-d") + 1
    argv[at:at] = ["--cap-add", "CAP_SYS_ADMIN"]
    c.created[cid] = c.node.store
    r = proc.run(argv, timeout=60)
    assert r.returncode != 0, "the create succeeded although the spec differs"
    assert "process.capabilities" in r.stderr, r.stderr
    assert [x["state"] for x in listed(c, job)] == ["committed"]


def test_restored_tasks_with_more_than_the_spec_grants_are_killed(ctr_containers):
    """The key holder re-seals a checkpoint taken with CAP_SYS_ADMIN with the spec digest of
    a plain container: the digest matches, CRIU brings the capability back, and the check
    of the restored tasks refuses it."""
    c = ctr_containers
    plain_job, job = checkpoint.new_id("plain"), checkpoint.new_id("privileged")
    plain_ckpt, _ = checkpoint_job(c, checkpoint.new_id("p"), plain_job)
    ckpt, uuid = checkpoint_job(c, checkpoint.new_id("src"), job, ["--cap-add", "CAP_SYS_ADMIN"])
    doc = seal.read_manifest(ckpt)
    doc["spec"] = seal.read_manifest(plain_ckpt)["spec"]
    seal.write_manifest(ckpt, seal.seal(doc, *seal.read_key(c.node.keys)))

    cid = checkpoint.new_id("victim")
    run_with(c, cid, [f"ARCH_JOB_ID={job}"])
    assert_fresh(c, cid, uuid)
    entries = listed(c, job)
    assert [x["state"] for x in entries] == ["failed"], entries
    assert "CAP_SYS_ADMIN" in entries[0]["reason"], entries[0]["reason"]
    assert "more than the spec grants" in entries[0]["reason"]
    stop(c, cid)


# ---------------------------------------------------------------- job archives

@pytest.fixture
def job_nodes(node_config, e2e_dir):
    skip_unless_root()
    archd = os.path.join(build_dir(), "src", "agent", "archd")
    skip_unless_binaries(archd, archctl_path())
    if node_config.criu is None:
        pytest.skip("no CRIU at $ARCH_CRIU_PREFIX/bin/criu")
    made = []

    def make():
        base = tempfile.mkdtemp(prefix="sealnode-", dir=e2e_dir)
        n = Node(archd, archctl_path(), base, node_config).start()
        made.append(n)
        return n

    yield make
    for n in made:
        n.cleanup()


def rewrite_archive(archive, out, edit):
    """A copy of a job archive (pax tar + zstd) with manifest.json replaced by edit(doc)."""
    def member(name, data):
        if os.path.basename(name) == "manifest.json" and name.count("/") <= 1:
            return json.dumps(edit(json.loads(data)), indent=2).encode()
        return data
    return seal.rewrite_archive(archive, out, member)


def test_planted_job_archive_is_refused(job_nodes, e2e_dir):
    a, b = job_nodes(), job_nodes()
    d = tempfile.mkdtemp(prefix="job-", dir=e2e_dir)
    exports = tempfile.mkdtemp(prefix="exports-", dir=e2e_dir)
    env_file = os.path.join(d, "job.env")
    with open(env_file, "w") as f:
        f.write("JOB_TAG=sealed\n")
    job_id = a.run_job(d, sys.executable, "-c", PY_JOB, env_file=env_file)
    count_file = os.path.join(d, "count.txt")
    wait_count(count_file, 10)
    out = a.checkpoint(job_id, "--export", exports)
    proc.wait_until(lambda: pid_gone(out["job"]["pid"]), 10, "the dumped job to be gone")
    good = out["archive"]
    foreign = seal.read_key(seal.foreign_key_dir(tempfile.mkdtemp(prefix="fk-", dir=e2e_dir)))

    def unsealed(doc):
        doc.pop("seal")
        return doc

    cases = {
        rewrite_archive(good, os.path.join(exports, "unsealed.tar.zst"), unsealed): "no seal",
        rewrite_archive(good, os.path.join(exports, "foreign.tar.zst"),
                        lambda doc: seal.seal(doc, *foreign)): "does not hold",
    }
    for path, why in cases.items():
        r = b.ctl("job", "restore", "--from", path, check=False)
        assert r.returncode != 0, f"{path} restored\n{r.stdout}"
        assert why in r.stderr and path in r.stderr, r.stderr
        assert b.jobs() == {}
        assert pid_gone(out["job"]["pid"])
    # The legitimate archive (sealed with the key both nodes share) restores.
    n = len(counts(count_file))
    b.restore("--from", good)
    wait_count(count_file, n + 10)
