"""Checkpoint on stop: an engine's SIGTERM (`ctr task kill`, `docker stop`; ECS task stops
and kubelet evictions arrive the same way, as `runc kill ID 15`) to an ARCH-enabled
container with ARCH_CHECKPOINT_ON_STOP=1, or to any ARCH-enabled container on a draining
node, checkpoints it instead of signalling it; the stop completes and the next start
resumes. Other signals, and containers on a node that is not draining, are untouched."""

import os

import pytest

from archtest import checkpoint, workloads

COUNT = "/data/count.txt"


@pytest.fixture
def draining(node_config):
    """Marks the node draining (the flag archd and `archctl node drain` write)."""
    flag = os.path.join(node_config.state, "draining")
    os.makedirs(node_config.state, exist_ok=True)
    with open(flag, "w") as f:
        f.write("test\n")
    yield flag
    os.unlink(flag)


def committed(c, cid):
    return [x for x in c.checkpoints(cid) if x["state"] in ("committed", "verified")]


def counter_at_checkpoint(ckpt):
    data = checkpoint.diff_member(ckpt, COUNT)
    assert data is not None, f"{COUNT} is not in the checkpoint's rootfs diff"
    uuid, values = workloads.parse_counter(data.decode())
    workloads.check_sequence(values, "the counter at the checkpoint")
    return uuid, values


def assert_resumes(c, cid, ckpt, uuid0, values0):
    c.assert_restored(cid, ckpt)
    uuid, values = c.wait_lines(cid, COUNT, len(values0) + 5, workloads.parse_counter)
    assert uuid == uuid0, "the counter started again instead of resuming"
    workloads.check_sequence(values, "the counter after the restart")


def test_ctr_sigterm_checkpoints_a_container_that_asked_for_it(ctr_containers):
    c, cid = ctr_containers, checkpoint.new_id("stop")
    c.run(cid, workloads.counter(COUNT), env=("ARCH_CHECKPOINT_ON_STOP=1",))
    c.wait_lines(cid, COUNT, 5, workloads.parse_counter)
    c.signal(cid, "SIGTERM")
    assert c.delete(cid) == 137  # ended by the checkpoint, not by the signal's handler
    found = committed(c, cid)
    assert len(found) == 1, c.checkpoints(cid)
    uuid0, values0 = counter_at_checkpoint(found[0]["path"])
    c.run(cid, workloads.counter(COUNT), env=("ARCH_CHECKPOINT_ON_STOP=1",))
    assert_resumes(c, cid, found[0]["path"], uuid0, values0)


def test_other_signals_and_idle_nodes_pass_through(ctr_containers):
    c = ctr_containers
    # ARCH-enabled, not draining, no ARCH_CHECKPOINT_ON_STOP: SIGTERM stops it as usual.
    plain = checkpoint.new_id("plain")
    c.run(plain, workloads.counter(COUNT))
    c.wait_lines(plain, COUNT, 2, workloads.parse_counter)
    c.signal(plain, "SIGTERM")  # delivered as is: the workload (pid 1) has no handler
    _, before = c.wait_lines(plain, COUNT, 1, workloads.parse_counter)
    c.wait_lines(plain, COUNT, len(before) + 3, workloads.parse_counter)  # still counting
    assert c.runc_status(plain) == "running"
    c.signal(plain, "SIGKILL")
    c.delete(plain)
    assert committed(c, plain) == []
    # ARCH_CHECKPOINT_ON_STOP=1, but SIGKILL: killed, nothing checkpointed.
    killed = checkpoint.new_id("kill")
    c.run(killed, workloads.counter(COUNT), env=("ARCH_CHECKPOINT_ON_STOP=1",))
    c.wait_lines(killed, COUNT, 2, workloads.parse_counter)
    c.signal(killed, "SIGKILL")
    assert c.delete(killed) == 137
    assert committed(c, killed) == []


def test_draining_node_checkpoints_on_sigterm(ctr_containers, draining):
    c, cid = ctr_containers, checkpoint.new_id("drain")
    c.run(cid, workloads.counter(COUNT))
    c.wait_lines(cid, COUNT, 5, workloads.parse_counter)
    c.signal(cid, "SIGTERM")
    assert c.delete(cid) == 137
    found = committed(c, cid)
    assert len(found) == 1, c.checkpoints(cid)
    uuid0, values0 = counter_at_checkpoint(found[0]["path"])
    os.unlink(draining)
    c.run(cid, workloads.counter(COUNT))
    assert_resumes(c, cid, found[0]["path"], uuid0, values0)
    with open(draining, "w") as f:  # the fixture removes it
        f.write("test\n")


def test_docker_stop_checkpoints_and_docker_start_resumes(docker_containers):
    c = docker_containers
    name = checkpoint.new_id("dstop")
    c.run(name, workloads.counter(COUNT), env=("ARCH_CHECKPOINT_ON_STOP=1",))
    c.wait_lines(name, COUNT, 5, workloads.parse_counter)
    r = c.env.docker("stop", "-t", "30", name, timeout=60)
    assert r.returncode == 0, r.stderr
    state = c.state(name)
    assert state["Status"] == "exited" and state["ExitCode"] == 137, state
    found = committed(c, name)
    assert len(found) == 1, c.checkpoints(name)
    uuid0, values0 = counter_at_checkpoint(found[0]["path"])
    r = c.env.docker("start", name, timeout=60)
    assert r.returncode == 0, f"docker start: {r.stderr}\n{c.diagnostics(name)}"
    assert_resumes(c, name, found[0]["path"], uuid0, values0)
