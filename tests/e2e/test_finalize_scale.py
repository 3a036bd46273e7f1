"""Finalize through the phased pipeline (one `runc list`, lock all, freeze all, dump in a pool
sized to the machine) on a handful of containers, and the zstd-compressed rootfs diff.

What a user cares about: every container is checkpointed, ends, and comes back exactly where
it was (counters continue without gap or repeat, 16 MiB of memory bit for bit), whichever
order finalize did the work in; a compressed rootfs diff restores through the unchanged
restore path. The 25..200-container timings are bench/finalize_scale.py's job, not a test's.
"""

import concurrent.futures
import json
import os

import pytest

from archtest import checkpoint, daemons, proc, workloads
from archtest.checkpoint import ZSTD_MAGIC
from test_checkpoint_containerd import check_counter_resumed, request_sum

def manifest_of(ckpt):
    with open(os.path.join(ckpt, "manifest.json")) as f:
        return json.load(f)


def counted(c, cid, path, n=3):
    try:
        return len(workloads.parse_counter(c.read_host(cid, path) or "")[1]) >= n
    except AssertionError:
        return False


def test_finalize_freezes_all_then_dumps_and_everything_resumes(ctr_containers):
    c = ctr_containers
    path = "/data/count.txt"
    counters = [checkpoint.new_id(f"fs{n}") for n in range(4)]
    mem = checkpoint.new_id("fsmem")
    mem_argv = workloads.memory("/data/ticks.txt", "/data/sums.txt", mib=16)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda cid: c.run(cid, workloads.counter(path)), counters))
    c.run(mem, mem_argv)
    for cid in counters:
        proc.wait_until(lambda: counted(c, cid, path), 30, f"{cid} to count")
    c.wait_lines(mem, "/data/ticks.txt", 2, workloads.parse_counter)

    out = c.archctl.json("container", "finalize", "--deadline", "100")
    mine = counters + [mem]
    results = {r["id"]: r for r in out["containers"] if r["namespace"] == c.ns}
    assert sorted(results) == sorted(mine), out
    failed = {cid: r["detail"] for cid, r in results.items() if r["result"] != "checkpointed"}
    assert not failed, failed
    # The phased pipeline ran: every container was locked and frozen before the dumps.
    assert {"list", "lock", "freeze", "dump"} <= set(out["phase_seconds"]), out["phase_seconds"]
    assert out["parallel"] >= 2, out["parallel"]
    for cid, r in results.items():
        assert {"freeze", "rootfs", "dump", "commit", "end"} <= set(r["timings_ms"]), (cid, r)
        extra = manifest_of(r["detail"])["extra"]
        assert extra["rootfs_diff"]["compression"] == "none", extra
        # CRIU's network lock is skipped (no TCP connection in these containers), through a
        # CRIU config file kept beside the dump log, which also marks the container's own
        # network namespace external (ARCH remakes it at restore: test_network.py).
        assert extra["network_lock"] == "skip", extra
        with open(os.path.join(r["detail"], "criu", "arch-criu.conf")) as f:
            lines = f.read().splitlines()
        # It also carries the node's ghost limit (64M by default).
        assert lines[0] == "network-lock skip", lines
        assert "ghost-limit 67108864" in lines, lines
        externals = [l for l in lines if l.startswith("external net[")]
        assert len(lines) == 3 and len(externals) == 1, lines

    statuses = {cid: c.delete(cid) for cid in mine}
    assert set(statuses.values()) == {137}, statuses
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda cid: c.run(cid, workloads.counter(path)), counters))
    c.run(mem, mem_argv)
    for cid in mine:
        c.assert_restored(cid, results[cid]["detail"])
    for cid in counters:
        check_counter_resumed(c, cid, path, results[cid]["detail"])
    n = check_counter_resumed(c, mem, "/data/ticks.txt", results[mem]["detail"], progress=2)
    tick, crc = request_sum(c, mem, n)
    assert crc == workloads.expected_memory_crc(tick, mib=16), (
        f"16 MiB of memory after the restore do not match the pattern at tick {tick}")


def test_finalize_one_by_one_order_still_works(ctr_containers):
    """--order one-by-one (freeze each just before its dump) gives the same result."""
    c = ctr_containers
    path = "/data/count.txt"
    ids = [checkpoint.new_id(f"ob{n}") for n in range(2)]
    for cid in ids:
        c.run(cid, workloads.counter(path))
    for cid in ids:
        proc.wait_until(lambda: counted(c, cid, path), 30, f"{cid} to count")
    out = c.archctl.json("container", "finalize", "--order", "one-by-one", "--parallel", "1")
    results = {r["id"]: r for r in out["containers"] if r["namespace"] == c.ns}
    assert {r["result"] for r in results.values()} == {"checkpointed"}, results
    assert "freeze" not in out["phase_seconds"], out["phase_seconds"]
    for cid in ids:
        assert c.delete(cid) == 137
        c.run(cid, workloads.counter(path))
        c.assert_restored(cid, results[cid]["detail"])
        check_counter_resumed(c, cid, path, results[cid]["detail"])


@pytest.fixture
def zstd_archctl(ctr_containers, node_config, e2e_dir):
    """archctl with the session's node config plus [checkpoint] rootfs_compression = zstd."""
    directory = os.path.join(e2e_dir, f"etc-arch-zstd-{os.getpid()}")
    with open(node_config.path) as f:
        text = f.read()
    path = daemons.write_node_config(directory, node_config.log_file, criu=node_config.criu,
                                     store=node_config.store, state=node_config.state)
    with open(path, "w") as f:
        f.write(text + "[checkpoint]\nrootfs_compression = zstd\nzstd_level = 3\n")
    return checkpoint.Archctl(ctr_containers.archctl.path, path)


def test_zstd_rootfs_diff_is_recorded_and_restores(ctr_containers, zstd_archctl):
    c = ctr_containers
    cid, path = checkpoint.new_id("zstd"), "/data/count.txt"
    c.run(cid, workloads.counter(path))
    proc.wait_until(lambda: counted(c, cid, path), 30, f"{cid} to count")
    out = zstd_archctl.json("container", "checkpoint", f"{c.ns}/{cid}")
    ckpt = out["checkpoint"]
    with open(os.path.join(ckpt, "rootfs-diff.tar"), "rb") as f:
        assert f.read(4) == ZSTD_MAGIC, "the rootfs diff is not zstd-compressed"
    extra = manifest_of(ckpt)["extra"]
    recorded = {k: v for k, v in extra["rootfs_diff"].items() if k not in ("bytes", "entries")}
    assert recorded == {"file": "rootfs-diff.tar", "compression": "zstd", "zstd_level": 3}, extra
    # The expansion limits the restore enforces (test_limits.py) are recorded beside it.
    assert extra["rootfs_diff"]["entries"] > 0 and extra["rootfs_diff"]["bytes"] > 0, extra
    assert c.delete(cid) == 137
    c.run(cid, workloads.counter(path))
    c.assert_restored(cid, ckpt)
    check_counter_resumed(c, cid, path, ckpt)


def test_archctl_killed_while_all_are_frozen_thaws_every_container(ctr_containers):
    """Freezing every container first must not leave them frozen when finalize dies: the one
    thaw guard of the finalize resumes all of them. kill -9 once all are frozen (one dump
    worker, so most still wait for their dump): none stays paused, the ones not committed
    go on counting, and the next finalize saves them."""
    c = ctr_containers
    path = "/data/count.txt"
    ids = [checkpoint.new_id(f"kf{n}") for n in range(4)]
    for cid in ids:
        c.run(cid, workloads.counter(path))
    for cid in ids:
        proc.wait_until(lambda: counted(c, cid, path), 30, f"{cid} to count")

    p = c.archctl.popen("container", "finalize", "--parallel", "1", "--deadline", "100")
    try:
        proc.wait_until(lambda: p.poll() is not None or all(
            c.runc_status(cid) == "paused" for cid in ids), 60, "finalize to freeze all",
            interval=0.005)
        assert p.poll() is None, f"finalize ended before all were frozen: {p.communicate()}"
    finally:
        checkpoint.kill9_and_check_children(p, 60, "finalize")

    proc.wait_until(lambda: all(c.runc_status(cid) != "paused" for cid in ids), 30,
                    "the thaw guard to resume every container")
    statuses = {cid: c.runc_status(cid) for cid in ids}
    running = [cid for cid, s in statuses.items() if s == "running"]
    assert set(statuses.values()) <= {"running", "stopped"}, statuses
    assert running, f"every container was already committed and ended: {statuses}"
    for cid in running:
        _, now = c.wait_lines(cid, path, 1, workloads.parse_counter)
        c.wait_lines(cid, path, len(now) + 3, workloads.parse_counter, timeout=15)

    out = c.archctl.json("container", "finalize", "--deadline", "100")
    results = {r["id"]: r for r in out["containers"] if r["namespace"] == c.ns}
    assert sorted(results) == sorted(running), (results, statuses)
    assert {r["result"] for r in results.values()} == {"checkpointed"}, results
    for cid in running:
        assert c.delete(cid) == 137
        c.run(cid, workloads.counter(path))
        c.assert_restored(cid, results[cid]["detail"])
        check_counter_resumed(c, cid, path, results[cid]["detail"])


def test_finalize_plans_for_a_store_too_slow_for_everything(ctr_containers, node_config):
    """The node knows (from earlier checkpoints) that its store takes 16 MB/s whether one
    dump writes or several: with 10 s left, of three containers holding 64 MiB each only one
    can be saved in time. Finalize attempts only that one (one dump at a time), leaves the
    other two running (never frozen: they keep counting) and says why, with its prediction;
    the dump's measured rate then replaces the assumed one."""
    c = ctr_containers
    rates = os.path.join(node_config.state, "store-rates.json")
    kept = None
    if os.path.exists(rates):
        with open(rates) as f:
            kept = f.read()
    with open(rates, "w") as f:
        json.dump({node_config.store: {"single_bps": 16e6, "aggregate_bps": 16e6}}, f)
    try:
        ids = [checkpoint.new_id(f"plan{n}") for n in range(3)]
        for cid in ids:
            c.run(cid, workloads.memory("/data/ticks.txt", "/data/sums.txt", mib=64))
        for cid in ids:
            c.wait_lines(cid, "/data/ticks.txt", 2, workloads.parse_counter)
        out = c.archctl.json("container", "finalize", "--deadline", "10", ok=(7,))
        results = {r["id"]: r for r in out["containers"] if r["namespace"] == c.ns}
        assert sorted(results) == sorted(ids), out
        done = [cid for cid, r in results.items() if r["result"] == "checkpointed"]
        skipped = {cid: r for cid, r in results.items() if r["result"] == "skipped"}
        assert len(done) == 1 and len(skipped) == 2, json.dumps(out, indent=1)
        assert "one dump at a time" in out["plans"][node_config.store], out["plans"]
        for cid, r in results.items():
            assert r["predicted_bytes"] >= 64 << 20, r
        for cid, r in skipped.items():
            assert "not attempted" in r["detail"] and "keeps running" in r["detail"], r
            assert c.runc_status(cid) == "running", cid
            n = len(workloads.parse_counter(c.read(cid, "/data/ticks.txt"))[1])
            c.wait_lines(cid, "/data/ticks.txt", n + 1, workloads.parse_counter)
        assert c.delete(done[0]) == 137
        with open(rates) as f:
            measured = json.load(f)[node_config.store]
        assert measured["single_bps"] != 16e6, measured  # folded in from the real dump
    finally:
        if kept is None:
            os.unlink(rates)
        else:
            with open(rates, "w") as f:
                f.write(kept)
