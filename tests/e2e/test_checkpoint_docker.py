"""Checkpoint and automatic restore under Docker (runtime "arch" = arch-runc).

`archctl container finalize` checkpoints the running ARCH-enabled container (Docker's
containerd namespace is `moby`); Docker then sees it exited, and `docker start` of the
same container resumes it: the counter goes on from where the checkpoint left it.
"""

import os

from archtest import checkpoint, proc, workloads


def test_finalize_then_docker_start_resumes(docker_containers):
    c = docker_containers
    name = checkpoint.new_id("docker")
    path = "/data/count.txt"
    c.run(name, workloads.counter(path))
    c.wait_lines(name, path, 10, workloads.parse_counter)
    cid = c.id_of(name)

    listed = {(x["namespace"], x["id"]): x for x in c.archctl.json("container", "list")}
    assert listed[("moby", cid)]["status"] == "running", listed

    out = c.archctl.json("container", "finalize", "--deadline", "60")
    results = {r["id"]: r for r in out["containers"]}
    assert results.get(cid, {}).get("result") == "checkpointed", (out, c.diagnostics(name))
    assert results[cid]["namespace"] == "moby"
    ckpt = results[cid]["detail"]
    assert os.path.isfile(os.path.join(ckpt, "manifest.json")), ckpt

    def exited():
        s = c.state(name)
        return s if s["Status"] == "exited" else None

    state = proc.wait_until(exited, 30, f"docker to see {name} exit")
    assert state["ExitCode"] == 137, state

    at_checkpoint = checkpoint.diff_member(ckpt, path)
    assert at_checkpoint is not None, f"{path} is not in the checkpoint's rootfs diff"
    uuid0, values0 = workloads.parse_counter(at_checkpoint.decode())
    workloads.check_sequence(values0, "the counter at the checkpoint")

    r = c.env.docker("start", name, timeout=60)
    assert r.returncode == 0, f"docker start {name}: {r.stderr}\n{c.diagnostics(name, ckpt)}"
    assert c.state(name)["Running"], c.state(name)
    c.assert_restored(name, ckpt)

    uuid, values = c.wait_lines(name, path, len(values0) + 10, workloads.parse_counter)
    assert uuid == uuid0, "the counter started again instead of resuming"
    workloads.check_sequence(values, "the counter after docker start")
