"""Container groups (ARCH_GROUP): members checkpointed as one unit and restored together.

- A TCP server and a client in two containers of one pod-like network namespace exchange
  numbered messages; `archctl group checkpoint` takes both as one group generation (one
  sealed group record naming each member's generation); both are re-created and restored
  from it, the connection between them goes on: the server holds 1..N, none lost or
  repeated, and the client is the same process on the same connection. The frozen time of
  the two-member group checkpoint is printed (pytest -s).
- A member CRIU cannot dump (io_uring) fails the group: every member is thawed and keeps
  running, and no generation of any member nor any group record is committed.
- Attack: a container of another owner (Kubernetes tenant) naming the same group is never a
  member: listed as its own group, not frozen, not checkpointed.
- Attack: a group record tampered with (a member's recorded seal changed, resealed with the
  node key as only the node admin could) or removed makes the whole generation unusable:
  neither member is restored from it, both start fresh.
- A member created alone waits for the others ([restore] group_wait), then starts fresh.
- Periodic checkpoints (archd) take a group as one unit on the smallest of its members'
  intervals, both members left running; the frozen time is printed (pytest -s).
"""

import json
import os
import shutil
import subprocess
import secrets

import pytest

from archtest import checkpoint, proc, seal, workloads


def ip(*args):
    return proc.run(["ip", *args], check=True)


@pytest.fixture
def pod():
    if not os.access("/usr/sbin/ip", os.X_OK):
        pytest.skip("iproute2 is missing")
    name = f"arch-grp-{secrets.token_hex(3)}"
    ip("netns", "add", name)
    ip("-n", name, "link", "set", "lo", "up")
    yield name
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def ctr_run(c, cid, argv, env, netns, check=True):
    full = c.run_argv(cid, argv, env)
    at = full.index("-d") + 1
    full[at:at] = ["--with-ns", f"network:/run/netns/{netns}"]
    c.created[cid] = c.node.store
    return full


def start(c, cid, argv, env, netns):
    r = proc.run(ctr_run(c, cid, argv, env, netns), timeout=60)
    assert r.returncode == 0, f"ctr run {cid} failed: {r.stderr}\n{c.diagnostics(cid)}"
    c.wait_status(cid, "RUNNING")


def start_together(c, specs, netns):
    """Creates several containers at once (as an orchestrator re-creating a pod would)."""
    procs = [subprocess.Popen(ctr_run(c, cid, argv, env, netns), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for cid, argv, env in specs]
    for (cid, _, _), p in zip(specs, procs):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, f"ctr run {cid} failed: {err}\n{c.diagnostics(cid)}"
    for cid, _, _ in specs:
        c.wait_status(cid, "RUNNING")


def server_records(c, cid):
    text = c.read(cid, "/data/server.log") or ""
    return [int(x) for x in workloads.complete_lines(text)]


def wait_records(c, cid, minimum, timeout=30):
    return proc.wait_until(lambda: len(server_records(c, cid)) >= minimum and
                           server_records(c, cid), timeout,
                           f"{cid} to hold {minimum} records", interval=0.05)


def check_records(values):
    assert values == list(range(1, len(values) + 1)), (
        "records lost or repeated across the group checkpoint: " +
        str([(i + 1, v) for i, v in enumerate(values) if v != i + 1][:5]))


def group_checkpoint(c, name, ok=True):
    r = c.archctl.run("group", "checkpoint", name, "-o", "json", timeout=180)
    if ok:
        assert r.returncode == 0, f"group checkpoint: {r.stdout}\n{r.stderr}"
        return json.loads(r.stdout)
    assert r.returncode != 0, r.stdout
    return r.stdout + r.stderr


def group_dir(c, name):
    return checkpoint.store_key_dir(c.node.store, c.ns, "arch-group." + name)


def committed(path):
    if not os.path.isdir(path):
        return []
    return sorted(x for x in os.listdir(path) if x.startswith("ckpt-"))


@pytest.fixture
def group(ctr_containers):
    name = "g" + secrets.token_hex(4)
    yield name
    shutil.rmtree(group_dir(ctr_containers, name), ignore_errors=True)


SERVER = [workloads.IN_IMAGE, "tcpserver", "9000", "/data/server.log"]
CLIENT = [workloads.IN_IMAGE, "tcpclient", "127.0.0.1", "9000", "/data/client.log", "20"]


def test_group_keeps_the_connection_between_its_members(ctr_containers, pod, group):
    c = ctr_containers
    srv, cli = checkpoint.new_id("gsrv"), checkpoint.new_id("gcli")
    env = [f"ARCH_GROUP={group}"]
    start(c, srv, SERVER, env, pod)
    start(c, cli, CLIENT, env, pod)
    wait_records(c, srv, 20)
    listed = [g for g in c.archctl.json("group", "list") if g["group"] == group]
    assert len(listed) == 1 and {m["id"] for m in listed[0]["members"]} == {srv, cli}, listed

    out = group_checkpoint(c, group)
    print(f"\ntwo-member group checkpoint: frozen {out['frozen_ms']:.0f} ms, "
          f"total {out['total_ms']:.0f} ms; " +
          "; ".join(" ".join(f"{k}={v:.0f}" for k, v in sorted(m["timings_ms"].items()))
                    for m in out["members"]))
    assert len(out["members"]) == 2, out
    record = os.path.join(out["record"], "group.json")
    with open(record) as f:
        doc = json.load(f)
    assert doc["generation"] == out["generation"] and len(doc["members"]) == 2, doc
    for m in out["members"]:
        manifest = seal.read_manifest(m["checkpoint"])
        assert manifest["extra"]["group"] == {"name": group, "generation": out["generation"]}
        assert manifest["extra"]["tcp"]["dumped"] is True, manifest["extra"]["tcp"]
    ckpts = {m["id"]: m["checkpoint"] for m in out["members"]}
    assert c.delete(srv) == 137 and c.delete(cli) == 137

    start_together(c, [(srv, SERVER, env), (cli, CLIENT, env)], pod)
    c.assert_restored(srv, ckpts[srv])
    c.assert_restored(cli, ckpts[cli])
    held = len(server_records(c, srv))
    check_records(wait_records(c, srv, held + 30))
    log = workloads.complete_lines(c.read(cli, "/data/client.log") or "")
    assert sum(1 for x in log if x.startswith("start ")) == 1, log  # restored, not restarted
    assert log.count("connect") == 1 and not any(x.startswith("lost ") for x in log), log


def test_a_member_that_cannot_be_dumped_fails_the_whole_group(ctr_containers, pod, group):
    c = ctr_containers
    good, bad = checkpoint.new_id("gok"), checkpoint.new_id("gbad")
    env = [f"ARCH_GROUP={group}"]
    start(c, good, SERVER, env, pod)
    start(c, bad, [workloads.IN_IMAGE, "iouring", "/data/count.txt"], env, pod)
    proc.wait_until(lambda: c.read(bad, "/data/count.txt"), 20, "the io_uring holder to count")
    err = group_checkpoint(c, group, ok=False)
    assert "every member thawed and still running" in err and bad in err, err
    for cid in (good, bad):
        assert c.status(cid) == "RUNNING" and c.runc_status(cid) == "running", cid
        assert [x for x in c.checkpoints(cid) if x["state"] == "committed"] == [], (
            c.checkpoints(cid))
    assert committed(group_dir(c, group)) == []
    # Both go on: the counter counts, the server answers.
    before = len(workloads.complete_lines(c.read(bad, "/data/count.txt")))
    proc.wait_until(lambda: len(workloads.complete_lines(c.read(bad, "/data/count.txt"))) >
                    before + 3, 20, "the io_uring holder to go on counting")
    r = c.exec(good, "sh", "-c", "printf '7\\n' | nc 127.0.0.1 9000", check=False, timeout=20)
    assert r.stdout.split()[:2] == ["0", "7"], r.stdout


def test_a_foreign_owners_container_naming_the_group_is_not_a_member(
        k8s_pair, ctr_containers, group):
    """Attack: two Kubernetes tenants (owners k8s.io+team-a, k8s.io+team-b) each run a
    container naming the same group: two groups; checkpointing team-a's never touches b."""
    c = k8s_pair
    a, b = checkpoint.new_id("ta"), checkpoint.new_id("tb")
    pod = {"io.kubernetes.cri.sandbox-name": "web-0", "io.kubernetes.cri.container-name": "app"}
    c.annotations[a] = dict(pod, **{"io.kubernetes.cri.sandbox-namespace": "team-a"})
    c.annotations[b] = dict(pod, **{"io.kubernetes.cri.sandbox-namespace": "team-b"})
    counter = workloads.counter()
    env = [f"ARCH_GROUP={group}", f"ARCH_JOB_ID={group}-job"]
    c.run(a, counter, env=env)
    c.run(b, counter, env=env)
    listed = {g["owner"]: g for g in c.archctl.json("group", "list") if g["group"] == group}
    assert set(listed) == {"k8s.io+team-a", "k8s.io+team-b"}, listed
    assert [m["id"] for m in listed["k8s.io+team-a"]["members"]] == [a], listed
    ambiguous = c.archctl.run("group", "checkpoint", group)
    assert ambiguous.returncode != 0 and "ambiguous" in ambiguous.stderr, ambiguous.stderr
    out = c.archctl.json("group", "checkpoint", f"k8s.io+team-a/{group}")
    assert [m["id"] for m in out["members"]] == [a], out
    assert "/k8s.io+team-a/" in out["record"], out
    assert c.status(b) == "RUNNING"
    assert not os.path.exists(checkpoint.store_key_dir(c.node.store, "k8s.io+team-b",
                                                       f"{group}-job")) or \
        committed(checkpoint.store_key_dir(c.node.store, "k8s.io+team-b", f"{group}-job")) == []
    for owner in ("k8s.io+team-a", "k8s.io+team-b"):
        for key in (f"{group}-job", "arch-group." + group):
            checkpoint.remove_key(c.node.store, owner, key)


@pytest.mark.parametrize("attack", ["tampered", "removed"])
def test_a_broken_group_record_makes_the_generation_unusable(ctr_containers, pod, group,
                                                             node_config, attack):
    c = ctr_containers
    x, y = checkpoint.new_id("gx"), checkpoint.new_id("gy")
    env = [f"ARCH_GROUP={group}"]
    argv = workloads.counter()
    start(c, x, argv, env, pod)
    start(c, y, argv, env, pod)
    out = group_checkpoint(c, group)
    assert c.delete(x) == 137 and c.delete(y) == 137
    if attack == "tampered":
        # Even resealed with the node key, a record whose member seal is not that member's
        # generation's makes the whole generation unusable.
        path = os.path.join(out["record"], "group.json")
        with open(path) as f:
            doc = json.load(f)
        doc["members"][0]["seal_mac"] = "0" * 64
        with open(path, "w") as f:
            json.dump(doc, f)
        manifest = seal.read_manifest(out["record"])
        seal.recompute_files(manifest, out["record"])
        seal.write_manifest(out["record"], seal.seal(manifest, *seal.read_key(node_config.keys)))
    else:
        shutil.rmtree(out["record"])
    start_together(c, [(x, argv, env), (y, argv, env)], pod)
    for cid in (x, y):
        errors = c.log_messages(cid, "error") + c.log_messages(cid, "warning")
        assert not any("restored from" in m for m in c.log_messages(cid)), c.log_messages(cid)
        assert any("no usable checkpoint" in m for m in errors), errors
        lines = workloads.complete_lines(c.read(cid, "/data/count.txt") or "")
        assert sum(1 for l in lines if l.startswith("start ")) == 1, lines  # fresh: one start


def test_a_member_created_alone_waits_then_starts_fresh(ctr_containers, pod, group):
    c = ctr_containers
    x, y = checkpoint.new_id("gw1"), checkpoint.new_id("gw2")
    env = [f"ARCH_GROUP={group}"]
    argv = workloads.counter()
    start(c, x, argv, env, pod)
    start(c, y, argv, env, pod)
    group_checkpoint(c, group)
    assert c.delete(x) == 137 and c.delete(y) == 137
    c.remove(y)
    start(c, x, argv, env, pod)  # y is never created again: x waits group_wait, then fresh
    errors = c.log_messages(x, "error") + c.log_messages(x, "warning")
    assert any("were not created within" in m and y in m for m in errors), errors
    assert [s["state"] for s in c.checkpoints(x)].count("committed") == 1  # kept


# ---------------------------------------------------------------- Kubernetes tenants

class K8sContainers(checkpoint.CtrContainers):
    def __init__(self, *args):
        super().__init__(*args)
        self.annotations = {}

    def run_argv(self, cid, argv, env=(), image=None):
        args = super().run_argv(cid, argv, env, image)
        at = args.index("run") + 1
        for name, value in self.annotations.get(cid, {}).items():
            args[at:at] = ["--annotation", f"{name}={value}"]
        return args


@pytest.fixture
def k8s_pair(ctr_workloads, workload_image, archctl_cli, node_config):
    from conftest import CtrEnv, arch_runc_path
    from archtest import daemons
    env = CtrEnv(ctr_workloads.ctd, "k8s.io", ctr_workloads.image, ctr_workloads.runc_root,
                 ctr_workloads.base)
    env.ctr("images", "import", workload_image.oci, check=True, timeout=120)
    containers = K8sContainers(env, workload_image.name, arch_runc_path(), archctl_cli,
                               node_config)
    yield containers
    left = containers.cleanup()
    daemons.remove_cgroup_parent("k8s.io")
    assert not left, f"processes were left in the containers' cgroups (killed): {left}"


def test_finalize_takes_a_group_as_one_unit(ctr_containers, pod, group):
    c = ctr_containers
    x, y = checkpoint.new_id("gf1"), checkpoint.new_id("gf2")
    env = [f"ARCH_GROUP={group}"]
    argv = workloads.counter()
    start(c, x, argv, env, pod)
    start(c, y, argv, env, pod)
    r = c.archctl.run("container", "finalize", "--deadline", "100", "-o", "json", timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    report = {e["id"]: e for e in json.loads(r.stdout)["containers"]}
    for cid in (x, y):
        assert report[cid]["result"] == "checkpointed", report[cid]
        assert any(f"group {group} generation" in n for n in report[cid].get("notes", [])), (
            report[cid])
    assert len(committed(group_dir(c, group))) == 1
    assert c.delete(x) == 137 and c.delete(y) == 137


def test_a_member_is_not_checkpointed_alone(ctr_containers, pod, group):
    """One member checkpointed on its own would break the group's generation (and prune
    it): refused, the member keeps running, nothing committed."""
    c = ctr_containers
    x = checkpoint.new_id("gsolo")
    start(c, x, workloads.counter(), [f"ARCH_GROUP={group}"], pod)
    r = c.archctl.run("container", "checkpoint", f"{c.ns}/{x}")
    assert r.returncode != 0 and f"is a member of group {group}" in r.stderr, r.stderr
    assert c.status(x) == "RUNNING" and c.checkpoints(x) == []


# ---------------------------------------------------------------- periodic checkpoints

from test_archd import make_archd  # noqa: E402,F401  (the archd factory fixture)


def test_periodic_checkpoints_take_the_group_as_one_unit(make_archd, ctr_containers, group):
    """ARCH_CHECKPOINT_INTERVAL on one member (2 s; the other sets none, the node default is
    off): archd checkpoints the whole group on the smallest of its members' intervals, as
    one group generation naming both, both left running; never one member alone."""
    c = ctr_containers
    a = make_archd(extra="[checkpoint]\nmin_interval = 1s\n").start()
    x, y = checkpoint.new_id("gp1"), checkpoint.new_id("gp2")
    argv = workloads.counter()
    c.run(x, argv, env=[f"ARCH_GROUP={group}", "ARCH_CHECKPOINT_INTERVAL=2s"])
    c.run(y, argv, env=[f"ARCH_GROUP={group}"])

    def periodic_events():
        return [e for e in a.events() if e["kind"] == "checkpoint" and e["id"] in (x, y) and
                e["outcome"].startswith("periodic")]
    proc.wait_until(lambda: {e["id"] for e in periodic_events()
                             if e["outcome"] == "periodic"} == {x, y}, 90,
                    "a periodic group checkpoint of both members", interval=0.2)
    assert a.stop() == 0, a.log_text()  # no checkpoint in progress from here on
    events = periodic_events()
    done = [e for e in events if e["outcome"] == "periodic"]
    assert all(f"group {group} generation" in e["detail"] for e in done), events
    print("\nperiodic two-member group checkpoint: " + done[0]["detail"].split(", /")[0])
    records = committed(group_dir(c, group))
    assert records, "no group record"
    with open(os.path.join(group_dir(c, group), records[-1], "group.json")) as f:
        doc = json.load(f)
    assert sorted(m["container_id"] for m in doc["members"]) == sorted([x, y]), doc
    for cid in (x, y):
        assert c.runc_status(cid) == "running" and c.status(cid) == "RUNNING", cid
        gens = [g for g in c.checkpoints(cid) if g["state"] == "committed"]
        assert gens, c.checkpoints(cid)
        for g in gens:  # every generation of a member is one of its group's
            manifest = seal.read_manifest(g["path"])
            assert manifest["extra"]["group"]["name"] == group, manifest["extra"]
        n = len(workloads.complete_lines(c.read(cid, "/data/count.txt") or ""))
        proc.wait_until(lambda: len(workloads.complete_lines(
            c.read(cid, "/data/count.txt") or "")) > n + 2, 20, f"{cid} to go on counting")
