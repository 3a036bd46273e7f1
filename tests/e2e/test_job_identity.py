"""Stable job identity, shared mode, generations and exit-aware cleanup on one node.

The two-node tests (test_two_nodes.py) run the same features across nodes on GlusterFS;
these check each rule on its own with a plain directory standing in for the shared
filesystem, through the session's containerd, arch-runc and a real archd (which records
the exit statuses that the delete's cleanup depends on).

- A job with ARCH_JOB_ID is checkpointed under <shared>/checkpoint/<ns>/<job id> and
  resumes under a different container id; its work directory <shared>/work/<ns>/<job id>
  is mounted at ARCH_WORKDIR_CONTAINER_PATH, is its cwd, and is not in the checkpoint.
- `archctl container list` shows the key and where it came from.
- A job that exits 0 loses its checkpoints at delete (its work directory stays); exit 3
  and a checkpoint (137) keep them.
- The newest generation corrupt: the one before is restored, the newest moved aside.
- `archctl checkpoint gc` removes only what is stale and not in use.
"""

import glob
import json
import os
import shutil
import tempfile

import pytest

from archtest import checkpoint, proc, workloads
from archtest.archd import write_config

from test_archd import make_archd  # noqa: F401  (a fixture)


@pytest.fixture
def shared(e2e_dir):
    path = tempfile.mkdtemp(prefix="shared-", dir=e2e_dir)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def archd_exits(make_archd, containerd_env, node_config):
    """A real archd recording this containerd's exits into <state>/exits."""
    a = make_archd(metrics=False)
    a.config = write_config(os.path.join(a.base, "etc"), a.node, a.socket, a.state_file,
                            a.event_log, a.metrics_port,
                            extra=f"imds_endpoint =\ncontainerd_address = {containerd_env.ctd.address}\n")
    a.start()
    return os.path.join(node_config.state, "exits")


def job_env(job, shared_dir):
    return [f"ARCH_JOB_ID={job}", f"ARCH_SHAREDFS_HOST_PATH={shared_dir}",
            "ARCH_WORKDIR_CONTAINER_PATH=/work"]


def counting_job(limit=0, code=0, ms=50):
    """Counts into /data/n.txt (rootfs) and /work/out.txt (work dir), reopening both files
    each step; with a limit, exits `code` after it. Resumes where it was (shell state)."""
    cond = f"[ $i -lt {limit} ]" if limit else ":"
    script = (f"echo start $(cat /proc/sys/kernel/random/uuid) >> /data/n.txt; i=0; "
              f"while {cond}; do i=$((i+1)); echo $i >> /data/n.txt; echo $i >> out.txt; "
              f"usleep {ms * 1000}; done; exit {code}")
    return ["sh", "-c", script]


def key_dir(shared_dir, ns, job):
    return os.path.join(shared_dir, "checkpoint", ns, job)


def wait_exit_record(exits, ns, cid):
    path = os.path.join(exits, ns, cid)
    proc.wait_until(lambda: os.path.exists(path), 15, f"archd to record the exit of {cid}")
    with open(path) as f:
        return json.load(f)["exit_status"]


def test_job_resumes_under_a_new_container_id_with_its_work_dir(ctr_containers, shared):
    c = ctr_containers
    job = checkpoint.new_id("job")
    first, second = checkpoint.new_id("a"), checkpoint.new_id("b")
    c.run(first, counting_job(), env=job_env(job, shared))
    _, values = c.wait_lines(first, "/data/n.txt", 8, workloads.parse_counter)

    # The work directory is mounted, is the cwd, and the job writes there.
    workdir = os.path.join(shared, "work", c.ns, job)
    cwd = c.exec(first, "sh", "-c", "cd /proc/1/cwd && pwd -P").stdout.strip()
    assert cwd == "/work", f"the job's cwd is {cwd!r}"
    proc.wait_until(lambda: os.path.getsize(os.path.join(workdir, "out.txt")) > 0, 10,
                    "the job to write into its work directory")
    listed = {x["id"]: x for x in c.archctl.json("container", "list")}
    assert listed[first]["key"] == job and listed[first]["key_source"] == "ARCH_JOB_ID", listed
    assert listed[first]["workdir"] == workdir and listed[first]["store"] == os.path.join(
        shared, "checkpoint"), listed[first]

    out = c.checkpoint(first)
    assert out["checkpoint"].startswith(key_dir(shared, c.ns, job) + "/ckpt-"), out
    assert c.delete(first) == 137
    # The work directory is the job's own, on the shared filesystem: not in the checkpoint.
    members = checkpoint.diff_members(out["checkpoint"])
    assert not any(m.startswith("work/") and m != "work/" for m in members), members
    at_ckpt = [int(x) for x in open(os.path.join(workdir, "out.txt")).read().split()]

    c.run(second, counting_job(), env=job_env(job, shared))
    c.assert_restored(second, out["checkpoint"])
    uuid0, values0 = workloads.parse_counter(
        checkpoint.diff_member(out["checkpoint"], "/data/n.txt").decode())
    uuid, values = c.wait_lines(second, "/data/n.txt", len(values0) + 8, workloads.parse_counter)
    assert uuid == uuid0, "the job started again instead of resuming"
    workloads.check_sequence(values, "/data/n.txt after the restore on a new container id")
    after = [int(x) for x in open(os.path.join(workdir, "out.txt")).read().split()]
    assert after[:len(at_ckpt)] == at_ckpt and len(after) > len(at_ckpt), "work dir output lost"
    assert after[len(at_ckpt)] == len(values0) + 1, (
        "the work directory's file does not go on from the restored count")


def test_exit_zero_removes_checkpoints_and_keeps_output(ctr_containers, shared, archd_exits):
    c = ctr_containers
    job = checkpoint.new_id("done")
    first, second = checkpoint.new_id("a"), checkpoint.new_id("b")
    argv = counting_job(limit=60, code=0)
    c.run(first, argv, env=job_env(job, shared))
    c.wait_lines(first, "/data/n.txt", 5, workloads.parse_counter)
    out = c.checkpoint(first)
    assert wait_exit_record(archd_exits, c.ns, first) == 137
    assert c.delete(first) == 137
    assert os.path.isdir(out["checkpoint"]), "a checkpointed job's delete removed its checkpoint"

    c.run(second, argv, env=job_env(job, shared))
    c.assert_restored(second, out["checkpoint"])
    assert wait_exit_record(archd_exits, c.ns, second) == 0
    assert c.delete(second) == 0
    assert not os.path.exists(key_dir(shared, c.ns, job)), "finished job's checkpoints remain"
    lines = open(os.path.join(shared, "work", c.ns, job, "out.txt")).read().split()
    assert [int(x) for x in lines] == list(range(1, 61)), "the job's output is not complete"


def test_crash_keeps_checkpoints(ctr_containers, shared, archd_exits):
    c = ctr_containers
    job = checkpoint.new_id("crash")
    first, second = checkpoint.new_id("a"), checkpoint.new_id("b")
    argv = counting_job(limit=40, code=3)
    c.run(first, argv, env=job_env(job, shared))
    c.wait_lines(first, "/data/n.txt", 5, workloads.parse_counter)
    out = c.checkpoint(first)
    assert c.delete(first) == 137
    c.run(second, argv, env=job_env(job, shared))
    c.assert_restored(second, out["checkpoint"])
    assert wait_exit_record(archd_exits, c.ns, second) == 3
    assert c.delete(second) == 3
    assert os.path.isdir(out["checkpoint"]), "a crashed job's checkpoints were removed"


def test_corrupt_newest_generation_falls_back_to_the_one_before(ctr_containers, shared):
    c = ctr_containers
    job = checkpoint.new_id("gen")
    first, second = checkpoint.new_id("a"), checkpoint.new_id("b")
    c.run(first, counting_job(), env=job_env(job, shared))
    c.wait_lines(first, "/data/n.txt", 5, workloads.parse_counter)
    older = c.checkpoint(first, extra=("--leave-running",))["checkpoint"]
    c.wait_lines(first, "/data/n.txt", 15, workloads.parse_counter)
    newer = c.checkpoint(first)["checkpoint"]
    # LATEST is the newest committed generation (it once showed the oldest).
    listed = {x["id"]: x for x in c.archctl.json("container", "list")}
    assert listed[first]["latest_checkpoint"] == os.path.basename(newer), (listed[first], older)
    inspected = c.archctl.json("checkpoint", "inspect", f"{c.ns}/{job}", "--store",
                               os.path.join(shared, "checkpoint"))
    assert inspected["path"] == newer, (inspected["path"], older)
    assert c.delete(first) == 137
    assert sorted(glob.glob(key_dir(shared, c.ns, job) + "/ckpt-*")) == sorted([older, newer])
    pages = sorted(glob.glob(os.path.join(newer, "images", "pages-*.img")))
    assert pages, os.listdir(os.path.join(newer, "images"))
    with open(pages[0], "r+b") as f:  # a bit flipped on the shared filesystem
        b = f.read(1)
        f.seek(0)
        f.write(bytes([b[0] ^ 0xFF]))

    c.run(second, counting_job(), env=job_env(job, shared))
    c.assert_restored(second, older)
    _, values0 = workloads.parse_counter(checkpoint.diff_member(older, "/data/n.txt").decode())
    _, values = c.wait_lines(second, "/data/n.txt", len(values0) + 5, workloads.parse_counter)
    workloads.check_sequence(values, "/data/n.txt restored from the older generation")
    states = {x["name"]: x["state"] for x in c.archctl.json(
        "checkpoint", "list", "--store", os.path.join(shared, "checkpoint"))}
    assert states.get(os.path.basename(older)) == "committed", states
    failed = [n for n, s in states.items() if s == "failed"]
    assert len(failed) == 1 and not os.path.exists(newer), states
    assert any("passed over a newer checkpoint" in m for m in c.log_messages(second)), (
        c.log_messages(second))


def test_gc_removes_only_stale_checkpoints_not_in_use(ctr_containers, shared):
    c = ctr_containers
    job = checkpoint.new_id("gc")
    cid = checkpoint.new_id("a")
    store = os.path.join(shared, "checkpoint")
    c.run(cid, counting_job(), env=job_env(job, shared))
    c.wait_lines(cid, "/data/n.txt", 3, workloads.parse_counter)
    ckpt = c.checkpoint(cid, extra=("--leave-running",))["checkpoint"]

    def gc(*args):
        return {x["path"]: x["result"] for x in c.archctl.json(
            "checkpoint", "gc", "--store", store, *args)}

    assert gc("--older-than", "1h") == {}, "a fresh checkpoint is not stale"
    kd = key_dir(shared, c.ns, job)
    # Stale by age, but its container still runs on this node: kept.
    assert gc("--older-than", "0s") == {kd: "kept: a container on this node uses it"}
    assert os.path.isdir(ckpt)
    c.remove(cid)  # kill + delete: the registry forgets it
    assert gc("--older-than", "0s", "--dry-run") == {kd: "would remove"}
    assert os.path.isdir(ckpt)
    assert gc("--older-than", "0s") == {kd: "removed"}
    assert not os.path.exists(kd)
    r = c.archctl.run("checkpoint", "gc", "--older-than", "soon")
    assert r.returncode != 0 and "invalid duration" in r.stderr, r


def test_work_dir_is_put_back_with_an_older_generation(ctr_containers, shared):
    """The node dies after a checkpoint the job outlived (--leave-running, as a periodic
    one): the job went on writing to its work directory, then the node is lost. Restored
    from that generation, it finds out.txt as it was at the checkpoint (the capture is put
    back), so the file holds each count exactly once; a file it created afterwards is gone.
    The checkpoint records the capture; a work directory over [checkpoint] workdir_capture
    is left as it is and the checkpoint says so (the next test)."""
    c = ctr_containers
    job = checkpoint.new_id("rollback")
    first, second = checkpoint.new_id("a"), checkpoint.new_id("b")
    c.run(first, counting_job(), env=job_env(job, shared))
    c.wait_lines(first, "/data/n.txt", 5, workloads.parse_counter)
    workdir = os.path.join(shared, "work", c.ns, job)
    out = c.checkpoint(first, extra=["--leave-running"])
    with open(os.path.join(out["checkpoint"], "manifest.json")) as f:
        record = json.load(f)["extra"]["workdir"]
    assert record["captured"] is True and record["file"] == "workdir.tar", record
    _, at_ckpt = workloads.parse_counter(
        checkpoint.diff_member(out["checkpoint"], "/data/n.txt").decode())
    # The job goes on after the checkpoint and writes on; then the node is lost.
    c.wait_lines(first, "/data/n.txt", len(at_ckpt) + 10, workloads.parse_counter)
    with open(os.path.join(workdir, "after-checkpoint"), "w") as f:
        f.write("written after the generation")
    c.signal(first, "SIGKILL")
    assert c.delete(first) == 137
    written = [int(x) for x in open(os.path.join(workdir, "out.txt")).read().split()]
    assert len(written) >= len(at_ckpt) + 10, "the job did not go on after the checkpoint"

    c.run(second, counting_job(), env=job_env(job, shared))
    c.assert_restored(second, out["checkpoint"])
    assert any("work directory put back" in m for m in c.log_messages(second)), (
        c.log_messages(second))
    _, values = c.wait_lines(second, "/data/n.txt", len(at_ckpt) + 15, workloads.parse_counter)
    proc.wait_until(lambda: len(open(os.path.join(workdir, "out.txt")).read().split())
                    >= len(at_ckpt) + 10, 20, "the restored job to write on")
    lines = [int(x) for x in open(os.path.join(workdir, "out.txt")).read().split()]
    assert lines == list(range(1, len(lines) + 1)), (
        f"out.txt repeats or skips counts after the restore: {lines[:5]}...{lines[-30:]}")
    assert not os.path.exists(os.path.join(workdir, "after-checkpoint"))
    c.signal(second, "SIGKILL")
    assert c.delete(second) == 137


def test_work_dir_over_the_cap_is_not_captured(ctr_containers, shared, e2e_dir):
    """[checkpoint] workdir_capture = 4K and a work directory holding more: the checkpoint
    says it is not captured (no file, a note), and a restore leaves the directory alone."""
    c = ctr_containers
    directory = os.path.join(e2e_dir, f"etc-workdir4k-{os.getpid()}")
    os.makedirs(directory, mode=0o755, exist_ok=True)
    with open(c.node.path) as f:
        text = f.read()
    path = os.path.join(directory, "arch.conf")
    with open(path, "w") as f:
        f.write(text + "\n[checkpoint]\nworkdir_capture = 4K\n")
    small = checkpoint.Archctl(c.archctl.path, path)
    job = checkpoint.new_id("bigwork")
    first, second = checkpoint.new_id("a"), checkpoint.new_id("b")
    workdir = os.path.join(shared, "work", c.ns, job)
    c.run(first, ["sh", "-c", "head -c 8192 /dev/zero > big; " + counting_job()[2]],
          env=job_env(job, shared))
    c.wait_lines(first, "/data/n.txt", 3, workloads.parse_counter)
    r = small.run("container", "checkpoint", f"{c.ns}/{first}", "-o", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    with open(os.path.join(out["checkpoint"], "manifest.json")) as f:
        record = json.load(f)["extra"]["workdir"]
    assert record["captured"] is False and "more than 4096 bytes" in record["reason"], record
    assert not os.path.exists(os.path.join(out["checkpoint"], "workdir.tar"))
    assert c.delete(first) == 137
    with open(os.path.join(workdir, "kept"), "w") as f:
        f.write("x")
    c.run(second, counting_job(), env=job_env(job, shared))
    c.assert_restored(second, out["checkpoint"])
    assert os.path.exists(os.path.join(workdir, "kept"))
    c.signal(second, "SIGKILL")
    assert c.delete(second) == 137
