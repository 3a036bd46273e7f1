"""Checkpoint and automatic restore under containerd (ctr --runc-binary arch-runc).

Each workload runs ARCH-enabled, makes progress, is checkpointed with `archctl container
checkpoint`, ends (exit 137), has its task and container deleted, and is run again with
the same id: arch-runc must restore it, and the workload must continue exactly where
the checkpoint left it (no restart, no repeated or missing value, memory bit for bit,
the root filesystem as it was). Finalize checkpoints 20 containers at once.
"""

import concurrent.futures
import os

from archtest import checkpoint, proc, workloads


def checkpoint_and_rerun(c, cid, argv):
    """Checkpoint (the task ends with 137), delete task and container, run the same id again.
    Returns the committed checkpoint's directory."""
    out = c.checkpoint(cid)
    assert out["namespace"] == c.ns and out["id"] == cid, out
    assert c.delete(cid) == 137, "a checkpointed container ends with SIGKILL's status 137"
    assert [x["state"] for x in c.checkpoints(cid)] == ["committed"], c.checkpoints(cid)
    c.run(cid, argv)
    c.assert_restored(cid, out["checkpoint"])
    return out["checkpoint"]


def check_counter_resumed(c, cid, path, ckpt, progress=10):
    """The file the checkpoint holds is a prefix of the file now, and the count goes on
    from there with the same process (same start line), no value repeated or missing."""
    at_checkpoint = checkpoint.diff_member(ckpt, path)
    assert at_checkpoint is not None, f"{path} is not in the checkpoint's rootfs diff"
    uuid0, values0 = workloads.parse_counter(at_checkpoint.decode())
    workloads.check_sequence(values0, f"{path} at the checkpoint")
    uuid, values = c.wait_lines(cid, path, len(values0) + progress, workloads.parse_counter)
    assert uuid == uuid0, f"{path}: the process started again (new start line) instead of resuming"
    workloads.check_sequence(values, f"{path} after the restore")
    return len(values0)


def test_counter_with_open_file_resumes(ctr_containers):
    c, cid = ctr_containers, checkpoint.new_id("counter")
    path = "/data/count.txt"
    c.run(cid, workloads.counter(path))
    _, before = c.wait_lines(cid, path, 10, workloads.parse_counter)
    ckpt = checkpoint_and_rerun(c, cid, workloads.counter(path))
    n = check_counter_resumed(c, cid, path, ckpt)
    assert n >= len(before), "the checkpoint holds less than was written before it"


def test_shell_loop_reopening_its_file_resumes(ctr_containers):
    c, cid = ctr_containers, checkpoint.new_id("shell")
    path = "/data/shell.txt"
    c.run(cid, workloads.shell_loop(path))
    c.wait_lines(cid, path, 10, workloads.parse_counter)
    ckpt = checkpoint_and_rerun(c, cid, workloads.shell_loop(path))
    check_counter_resumed(c, cid, path, ckpt)


def test_pipeline_resumes_without_gaps(ctr_containers):
    c, cid = ctr_containers, checkpoint.new_id("pipe")
    path = "/data/pipe.txt"
    c.run(cid, workloads.pipeline(path))
    c.wait_lines(cid, path, 10, workloads.parse_pipe)
    ckpt = checkpoint_and_rerun(c, cid, workloads.pipeline(path))
    uuid0, pairs0 = workloads.parse_pipe(checkpoint.diff_member(ckpt, path).decode())
    workloads.check_pipe(pairs0)
    uuid, pairs = c.wait_lines(cid, path, len(pairs0) + 20, workloads.parse_pipe)
    assert uuid == uuid0, "the consumer started again instead of resuming"
    workloads.check_pipe(pairs)
    # Both processes of the pipeline came back (the shell waiting for them, too).
    ps = c.exec(cid, "ps", "-o", "args").stdout.splitlines()
    assert sorted(a for a in ps if a.startswith(workloads.IN_IMAGE)) == [
        f"{workloads.IN_IMAGE} consume {path}", f"{workloads.IN_IMAGE} produce 20"], ps


def test_no_write_to_a_volume_after_the_dump(ctr_containers, tmp_path):
    """A write made after the memory snapshot is not in the checkpoint; on a volume (not
    rolled back with the rootfs) the restored process would make it again. The writer here
    is a child of the container's init (a shell), appending a line every millisecond to a
    file on a bind-mounted host directory: nothing of the container may run between the
    dump and its end, so the file goes on 1, 2, 3 ... without a repeat, over two rounds."""
    c, cid = ctr_containers, checkpoint.new_id("volume")
    host = str(tmp_path / "vol")
    c.binds[cid] = (host, "/vol")
    argv = ["sh", "-c", f"{workloads.IN_IMAGE} counter /vol/count.txt 1 & wait"]
    path = os.path.join(host, "count.txt")

    def values():
        with open(path) as f:
            return workloads.parse_counter(f.read())

    c.run(cid, argv)
    proc.wait_until(lambda: os.path.exists(path) and len(values()[1]) >= 50, 30,
                    "the counter to write 50 lines")
    uuid0 = values()[0]
    for round_ in (1, 2):
        out = c.checkpoint(cid)
        assert c.delete(cid) == 137, "a checkpointed container ends with SIGKILL's status 137"
        n = len(values()[1])
        c.run(cid, argv)
        c.assert_restored(cid, out["checkpoint"])
        proc.wait_until(lambda: len(values()[1]) >= n + 50, 30,
                        f"the restored counter to go on (round {round_})")
        uuid, seen = values()
        assert uuid == uuid0, "the counter started again instead of resuming"
        workloads.check_sequence(seen, f"/vol/count.txt after restore {round_}")


def request_sum(c, cid, after_tick):
    """SIGUSR1 to the memory workload; returns its next (tick, crc) line past after_tick."""
    c.signal(cid, "SIGUSR1")

    def answered():
        sums = workloads.parse_sums(c.read(cid, "/data/sums.txt") or "")
        return next(((t, crc) for t, crc in sums if t > after_tick), None)

    return proc.wait_until(answered, 30, f"{cid} to write a checksum", interval=0.05)


def test_memory_comes_back_bit_for_bit(ctr_containers):
    c, cid = ctr_containers, checkpoint.new_id("memory")
    argv = workloads.memory("/data/ticks.txt", "/data/sums.txt", mib=64)
    c.run(cid, argv)
    c.wait_lines(cid, "/data/ticks.txt", 3, workloads.parse_counter)
    tick, crc = request_sum(c, cid, 0)
    assert crc == workloads.expected_memory_crc(tick), "the harness's checksum model is wrong"

    ckpt = checkpoint_and_rerun(c, cid, argv)
    inspect = c.archctl.json("checkpoint", "inspect", ckpt)
    assert inspect["sizes"]["memory_pages"] >= 64 << 20, inspect["sizes"]
    n = check_counter_resumed(c, cid, "/data/ticks.txt", ckpt, progress=3)
    tick2, crc2 = request_sum(c, cid, n)
    assert tick2 > n
    assert crc2 == workloads.expected_memory_crc(tick2), (
        f"memory after the restore does not match the pattern at tick {tick2}")


def test_rootfs_changes_survive(ctr_containers):
    """Deleted, replaced, linked, sparse, xattr'd and re-moded files come back exactly."""
    c, cid = ctr_containers, checkpoint.new_id("rootfs")
    c.run(cid, workloads.mutate())
    proc.wait_until(lambda: c.read_host(cid, "/ready"), 30, "the rootfs workload to be ready")
    before = workloads.parse_listing(c.exec(cid, *workloads.lister()).stdout)
    # The harness really made the changes the test is about.
    assert "/etc/motd" not in before and "/opt/app/a.txt" not in before
    assert "/opt/app/new.txt" in before and "/opt/app/deeper/leaf" in before
    assert workloads.listing_field(before["/data/original"], "nlink") == "2"
    assert (workloads.listing_field(before["/data/original"], "linkgroup") ==
            workloads.listing_field(before["/data/hardlink"], "linkgroup") == "/data/hardlink")
    assert workloads.listing_field(before["/data/sparse"], "holes") == "yes"
    assert "user.arch.test=" in before["/data/xattr.txt"]
    assert before["/etc/app.conf"].split("\t")[1:5] == ["f", "0600", "1234", "5678"]
    assert before["/data/setuid"].split("\t")[2] == "4755"
    assert workloads.listing_field(before["/data/abs-symlink"], "target") == "/etc/passwd"

    checkpoint_and_rerun(c, cid, workloads.mutate())
    after = workloads.parse_listing(c.exec(cid, *workloads.lister()).stdout)
    diff = workloads.listing_diff(before, after)
    assert diff == {}, "the restored rootfs differs from the one checkpointed:\n" + "\n".join(
        f"{path}\n  before: {d['before']}\n  after:  {d['after']}" for path, d in diff.items())
    assert "/etc/motd" not in after and "/opt/app/sub/b.txt" not in after


def test_finalize_twenty_containers(ctr_containers):
    c = ctr_containers
    path = "/data/count.txt"
    ids = [checkpoint.new_id(f"fin{n:02d}") for n in range(20)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda cid: c.run(cid, workloads.counter(path)), ids))

    def counted(cid):
        try:
            return len(workloads.parse_counter(c.read_host(cid, path) or "")[1]) >= 3
        except AssertionError:
            return False

    for cid in ids:
        proc.wait_until(lambda: counted(cid), 30, f"{cid} to count")

    out = c.archctl.json("container", "finalize", "--parallel", "4", "--deadline", "100")
    results = {r["id"]: r for r in out["containers"] if r["namespace"] == c.ns}
    assert sorted(results) == sorted(ids), out
    failed = {cid: r["detail"] for cid, r in results.items() if r["result"] != "checkpointed"}
    assert not failed, failed

    statuses = {}
    for cid in ids:
        statuses[cid] = c.delete(cid)
    assert set(statuses.values()) == {137}, statuses
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda cid: c.run(cid, workloads.counter(path)), ids))
    for cid in ids:
        c.assert_restored(cid, results[cid]["detail"])
        check_counter_resumed(c, cid, path, results[cid]["detail"], progress=3)
