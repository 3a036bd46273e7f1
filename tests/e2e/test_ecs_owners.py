"""ECS owners (issue 12, item 2): on a node with `[owners] ecs = true`, a Docker container
the ECS agent created (labels com.amazonaws.ecs.cluster, .task-definition-family,
.task-arn in Docker's own config.v2.json) belongs to `ecs+<cluster>+<family>`, so two
task families naming the same ARCH_JOB_ID never share a checkpoint. The node decides:
with the setting off, the same containers are `moby`.

The session dockerd's runtime "arch-ecs" is arch-runc with this file's node config
(conftest.ecs_config_path); runtime "arch" keeps the session's (ECS owners off).
Attack beside it: a hostile config.v2.json (a symlink, a huge file, malformed JSON) or
labels that cannot be mapped ('/', '..', '+') make the create fail with the reason; a
planted file is never followed.
"""

import json
import os
import secrets
import shutil

import pytest

from archtest import checkpoint, daemons, proc, workloads
from archtest.checkpoint import DockerContainers

CLUSTER = "e2e-cluster"


def ecs_labels(family, cluster=CLUSTER):
    task = secrets.token_hex(16)
    return {"com.amazonaws.ecs.cluster": cluster,
            "com.amazonaws.ecs.task-definition-family": family,
            "com.amazonaws.ecs.task-arn": f"arn:aws:ecs:eu-west-1:123456789012:task/{cluster}/{task}",
            "com.amazonaws.ecs.container-name": "app"}


class EcsContainers(DockerContainers):
    """Docker containers with ECS labels on a chosen runtime ("arch-ecs" or "arch")."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.stores = set()

    def create_argv(self, verb, name, argv, env, labels, runtime):
        args = [verb, "--runtime", runtime, "-e", "ARCH_ENABLE=1", "--name", name]
        if verb == "run":
            args.insert(1, "-d")
        for item in env:
            args += ["-e", item]
        for k, v in labels.items():
            args += ["--label", f"{k}={v}"]
        return [*args, self.image, *argv]

    def run_ecs(self, name, argv, env, labels, runtime="arch-ecs", check=True):
        self.created[name] = self.node.store
        r = self.env.docker(*self.create_argv("run", name, argv, env, labels, runtime), timeout=60)
        if check:
            assert r.returncode == 0, f"docker run {name}: {r.stderr}\n{self.diagnostics(name)}"
            self.id_of(name)
        return r

    def create_ecs(self, name, argv, env, labels, runtime="arch-ecs"):
        self.created[name] = self.node.store
        r = self.env.docker(*self.create_argv("create", name, argv, env, labels, runtime),
                            timeout=60)
        assert r.returncode == 0, r.stderr
        return self.id_of(name)

    def owner_of(self, name):
        listed = {x["id"]: x for x in self.archctl.json("container", "list")}
        return listed.get(self.id_of(name), {}).get("owner")


@pytest.fixture
def ecs_config(docker_workloads, node_config, e2e_dir):
    from conftest import ecs_config_path
    path = ecs_config_path(e2e_dir)
    daemons.write_node_config(os.path.dirname(path), node_config.log_file,
                              criu=node_config.criu, store=node_config.store,
                              state=node_config.state, keys=node_config.keys,
                              roots=node_config.roots)
    with open(path, "a") as f:
        f.write(f"[owners]\necs = true\n[docker]\ndata_root = "
                f"{docker_workloads.dockerd.data_root}\n")
    return path


@pytest.fixture
def ecs_containers(docker_workloads, workload_image, archctl_cli, node_config, ecs_config):
    from conftest import DOCKER_CGROUP_PARENT
    c = EcsContainers(docker_workloads, workload_image.name, archctl_cli, node_config,
                      DOCKER_CGROUP_PARENT)
    yield c
    left = c.cleanup()
    for name in store_entries(node_config.store):
        if name.startswith(f"ecs+{CLUSTER}+"):
            shutil.rmtree(os.path.join(node_config.store, name), ignore_errors=True)
    assert not left, f"processes were left in the containers' cgroups (killed): {left}"


def store_entries(store):
    return set(os.listdir(store)) if os.path.isdir(store) else set()


def checkpoint_and_exit(c, name):
    out = c.checkpoint(name)
    proc.wait_until(lambda: c.state(name)["Status"] == "exited", 30, f"{name} to exit")
    at = checkpoint.diff_member(out["checkpoint"], "/data/n.txt")
    uuid, values = workloads.parse_counter(at.decode())
    return out["checkpoint"], uuid, values


def test_two_task_families_with_one_job_id(ecs_containers, node_config):
    c = ecs_containers
    job = checkpoint.new_id("ecs-job")
    env = [f"ARCH_JOB_ID={job}"]
    argv = workloads.counter("/data/n.txt")
    a1, b1 = checkpoint.new_id("fam-a"), checkpoint.new_id("fam-b")
    c.run_ecs(a1, argv, env, ecs_labels("fam-a"))
    c.run_ecs(b1, argv, env, ecs_labels("fam-b"))
    c.wait_lines(a1, "/data/n.txt", 5, workloads.parse_counter)
    c.wait_lines(b1, "/data/n.txt", 5, workloads.parse_counter)
    assert c.owner_of(a1) == f"ecs+{CLUSTER}+fam-a"
    assert c.owner_of(b1) == f"ecs+{CLUSTER}+fam-b"

    ckpt_a, uuid_a, values_a = checkpoint_and_exit(c, a1)
    ckpt_b, uuid_b, _ = checkpoint_and_exit(c, b1)
    store = node_config.store
    assert ckpt_a.startswith(os.path.join(store, f"ecs+{CLUSTER}+fam-a", job) + "/ckpt-")
    assert ckpt_b.startswith(os.path.join(store, f"ecs+{CLUSTER}+fam-b", job) + "/ckpt-")
    assert uuid_a != uuid_b

    # Each family's rescheduled task (new container id) resumes its own checkpoint.
    a2, b2 = checkpoint.new_id("fam-a"), checkpoint.new_id("fam-b")
    c.run_ecs(b2, argv, env, ecs_labels("fam-b"))
    c.run_ecs(a2, argv, env, ecs_labels("fam-a"))
    c.assert_restored(a2, ckpt_a)
    c.assert_restored(b2, ckpt_b)
    uuid, values = c.wait_lines(a2, "/data/n.txt", len(values_a) + 3, workloads.parse_counter)
    assert uuid == uuid_a, "family a did not resume its own checkpoint"
    assert c.wait_lines(b2, "/data/n.txt", 3, workloads.parse_counter)[0] == uuid_b

    # A third family naming the same job starts fresh.
    c3 = checkpoint.new_id("fam-c")
    c.run_ecs(c3, argv, env, ecs_labels("fam-c"))
    uuid_c, _ = c.wait_lines(c3, "/data/n.txt", 3, workloads.parse_counter)
    assert uuid_c not in (uuid_a, uuid_b)
    assert not any("restored from" in m for m in c.log_messages(c3))


def test_node_setting_off_keeps_docker_containers_moby(ecs_containers):
    c = ecs_containers
    name = checkpoint.new_id("off")
    c.run_ecs(name, workloads.counter("/data/n.txt"), [f"ARCH_JOB_ID={name}"],
              ecs_labels("fam-a"), runtime="arch")  # the session's config: ecs off
    c.wait_lines(name, "/data/n.txt", 2, workloads.parse_counter)
    assert c.owner_of(name) == "moby"
    # Without ECS labels the ECS-enabled node keeps Docker's owner too.
    plain = checkpoint.new_id("plain")
    c.run_ecs(plain, workloads.counter("/data/n.txt"), [f"ARCH_JOB_ID={plain}"], {})
    c.wait_lines(plain, "/data/n.txt", 2, workloads.parse_counter)
    assert c.owner_of(plain) == "moby"


# ---- attacks: labels that cannot be mapped, a hostile config.v2.json

@pytest.mark.parametrize("family,cluster", [("a/b", CLUSTER), ("..", CLUSTER),
                                            ("fam+x", CLUSTER), ("fam-a", "c:1/x")])
def test_unmappable_labels_are_refused(ecs_containers, node_config, family, cluster):
    c = ecs_containers
    name = checkpoint.new_id("bad-label")
    before = store_entries(node_config.store)
    r = c.run_ecs(name, workloads.counter("/data/n.txt"), [f"ARCH_JOB_ID={name}"],
                  ecs_labels(family, cluster), check=False)
    assert r.returncode != 0, f"a container labelled {family!r}/{cluster!r} was created"
    assert "ECS label" in r.stderr and "refusing" in r.stderr, r.stderr
    assert not c.state(name)["Running"]
    assert store_entries(node_config.store) == before, "a refused owner reached the store"


def hostile_record(kind, path, elsewhere):
    """Replaces Docker's config.v2.json at `path` with an attacker's version."""
    os.unlink(path)
    if kind == "symlink":
        with open(elsewhere, "w") as f:
            json.dump({"Config": {"Labels": ecs_labels("victim")}}, f)
        os.symlink(elsewhere, path)
    elif kind == "huge":
        with open(path, "w") as f:
            f.write('{"Config":{"Labels":{"a":"' + "x" * (2 << 20) + '"}}}')
    elif kind == "malformed":
        with open(path, "w") as f:
            f.write('{"Config":{"Labels":{"com.amazonaws.ecs.cluster":')


@pytest.mark.parametrize("kind", ["symlink", "huge", "malformed"])
def test_hostile_docker_record_is_refused(ecs_containers, node_config, e2e_dir, kind):
    c = ecs_containers
    name = checkpoint.new_id(f"hostile-{kind}")
    cid = c.create_ecs(name, workloads.counter("/data/n.txt"), [f"ARCH_JOB_ID={name}"],
                       ecs_labels("fam-a"))
    record = os.path.join(c.env.dockerd.data_root, "containers", cid, "config.v2.json")
    assert os.path.isfile(record)
    elsewhere = os.path.join(e2e_dir, f"planted-{cid}.json")
    hostile_record(kind, record, elsewhere)
    r = c.env.docker("start", name, timeout=60)
    try:
        assert r.returncode != 0, f"{kind} config.v2.json: the container started"
        assert "config.v2.json" in r.stderr, r.stderr
        want = {"symlink": "symlink", "huge": "bytes", "malformed": "JSON"}[kind]
        assert want in r.stderr, r.stderr
        assert not os.path.exists(os.path.join(node_config.store, f"ecs+{CLUSTER}+victim"))
    finally:
        if os.path.lexists(elsewhere):
            os.unlink(elsewhere)
