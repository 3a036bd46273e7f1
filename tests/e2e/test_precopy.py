"""`archctl container finalize --pre-copy`: a CRIU pre-dump of each running container, then
a frozen dump of only what changed, where the kernel tracks dirty pages (soft-dirty); a clean
plain dump, said so per container, where it does not (this project's build machines).

Either way the user's question is the same: were all containers saved, and do they continue
exactly where they were? On a kernel with soft-dirty tracking the test also checks that the
checkpoint holds the pre-dump (images/parent) and restores from both image sets.
"""

import json
import os
import subprocess

from archtest import checkpoint, proc, workloads

from test_finalize_scale import check_counter_resumed, counted, request_sum


def dirty_tracking(criu):
    r = subprocess.run([criu, "check", "--feature", "mem_dirty_track"], capture_output=True,
                       text=True, timeout=30)
    return r.returncode == 0


def test_finalize_pre_copy_saves_everything_with_or_without_soft_dirty(ctr_containers,
                                                                       node_config):
    c = ctr_containers
    tracking = dirty_tracking(node_config.criu)
    path = "/data/count.txt"
    counters = [checkpoint.new_id(f"pc{n}") for n in range(2)]
    mem = checkpoint.new_id("pcmem")
    mem_argv = workloads.memory("/data/ticks.txt", "/data/sums.txt", mib=16)
    for cid in counters:
        c.run(cid, workloads.counter(path))
    c.run(mem, mem_argv)
    for cid in counters:
        proc.wait_until(lambda: counted(c, cid, path), 30, f"{cid} to count")
    c.wait_lines(mem, "/data/ticks.txt", 2, workloads.parse_counter)

    r = c.archctl.run("container", "finalize", "--pre-copy", "--deadline", "100")
    assert r.returncode == 0, f"finalize --pre-copy failed:\n{r.stdout}\n{r.stderr}"
    if not tracking:
        # The human-readable report says why each container got a plain dump.
        assert "note: pre-copy not used: the kernel has no soft-dirty page tracking" in r.stdout, (
            r.stdout)
    listed = c.archctl.checkpoints()
    results = {}
    for cid in counters + [mem]:
        mine = [x for x in listed if x["namespace"] == c.ns and x["key"] == cid]
        assert len(mine) == 1 and mine[0]["state"] == "committed", mine
        results[cid] = mine[0]["path"]

    for cid, ckpt in results.items():
        with open(os.path.join(ckpt, "manifest.json")) as f:
            extra = json.load(f)["extra"]
        parent = os.path.join(ckpt, "images", "parent")
        if tracking:
            assert extra["pre_copy"] == "used", (cid, extra)
            assert os.path.isdir(parent) and not os.path.islink(parent), (
                "the pre-dump must be a real directory inside the checkpoint")
            assert any(n.startswith("pages-") for n in os.listdir(parent)), os.listdir(parent)
        else:
            assert extra["pre_copy"] == "unavailable", (cid, extra)
            assert not os.path.exists(parent), f"{cid}: a pre-dump was left on a kernel without it"
        log = os.path.join(ckpt, "criu", "dump.log")
        assert os.path.isfile(log), f"{cid}: the final dump's CRIU log is missing"

    statuses = {cid: c.delete(cid) for cid in results}
    assert set(statuses.values()) == {137}, statuses
    for cid in counters:
        c.run(cid, workloads.counter(path))
    c.run(mem, mem_argv)
    for cid, ckpt in results.items():
        c.assert_restored(cid, ckpt)
    for cid in counters:
        check_counter_resumed(c, cid, path, results[cid])
    n = check_counter_resumed(c, mem, "/data/ticks.txt", results[mem], progress=2)
    tick, crc = request_sum(c, mem, n)
    assert crc == workloads.expected_memory_crc(tick, mib=16), (
        f"memory after the restore does not match the pattern at tick {tick}")


def test_finalize_json_reports_pre_copy_per_container(ctr_containers, node_config):
    c = ctr_containers
    tracking = dirty_tracking(node_config.criu)
    cid, path = checkpoint.new_id("pcjson"), "/data/count.txt"
    c.run(cid, workloads.counter(path))
    proc.wait_until(lambda: counted(c, cid, path), 30, f"{cid} to count")
    out = c.archctl.json("container", "finalize", "--pre-copy=on", "--deadline", "100")
    r = next(x for x in out["containers"] if x["id"] == cid and x["namespace"] == c.ns)
    assert r["result"] == "checkpointed", r
    if tracking:
        assert r["pre_copy"] == "used" and "pre_dump" in r["timings_ms"], r
    else:
        assert r["pre_copy"] == "unavailable", r
        assert any("soft-dirty" in n and "plain dump" in n for n in r["notes"]), r["notes"]
        assert "pre_dump" not in r["timings_ms"], r
    assert c.delete(cid) == 137
    c.run(cid, workloads.counter(path))
    c.assert_restored(cid, r["detail"])
    check_counter_resumed(c, cid, path, r["detail"])
