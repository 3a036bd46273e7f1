"""Resume on another node (issue 5), for real: two nodes on this machine (each its own
network and mount namespace, containerd, archd and fake EC2 metadata service), sharing
a GlusterFS volume mounted on both (archtest/twonode.py, archtest/gluster.py).

A job is one ARCH job id (ARCH_JOB_ID) run as differently named containers, one after
the other, as an orchestrator reschedules it. Shared mode: the checkpoints go under
<shared>/checkpoint/<ns>/<job id>/ and <shared>/work/<ns>/<job id> is the job's /work
and working directory. What is checked is what the job's owner cares about: its ledger
in the work dir and its counter in the root file system continue without gap or repeat
across nodes, its files are there, finished jobs leave no checkpoint behind, crashed
ones keep theirs, and a node dying in the middle of a checkpoint costs only the time
since the previous good one.

The timings a user waits for (notice to checkpointed on the reclaimed node, create to
running on the other) are printed (pytest -s) and written to
<build dir>/two-node-timings.json; they are not asserted.
"""

import json
import os
import secrets
import time

import pytest

from archtest import checkpoint, daemons, gluster, image, proc, twonode, workloads
from conftest import (archd_path, archctl_path, arch_runc_path, build_dir, criu_path,
                      skip_unless_binaries, skip_unless_root)

WORKDIR = "/work"
TIMINGS = {}


@pytest.fixture(scope="module")
def cluster(e2e_dir, workload_image, archctl_cli):
    skip_unless_root()
    reason = gluster.available()
    if reason:
        pytest.skip(reason)
    skip_unless_binaries(archd_path(), twonode.NSENTER, twonode.UNSHARE)
    binaries = twonode.Binaries(arch_runc_path(), archctl_path(), archd_path(), criu_path())
    with twonode.Cluster(os.path.join(e2e_dir, "two-node"), binaries, workload_image.name,
                         workload_image.oci) as c:
        yield c
    if TIMINGS:
        TIMINGS["loadavg_1m_at_end"] = os.getloadavg()[0]
        path = os.path.join(build_dir(), "two-node-timings.json")
        with open(path, "w") as f:
            json.dump(TIMINGS, f, indent=2)
        print(f"\ntwo-node timings ({path}): {json.dumps(TIMINGS)}")


def record(name, seconds):
    TIMINGS[name] = round(seconds, 3)
    print(f"\n{name}: {seconds:.2f} s")


# ------------------------------------------------------------------ the job

LEDGER = "ledger.txt"          # in the work dir (relative: the working directory is /work)
COUNTER = "/data/count.txt"    # in the container's root file system
NOTE = "/data/note.txt"        # a root file system change made at the first start
STARTED = "started-by.txt"     # a work-dir file written at the first start
STOP = "stop"                  # the test writes an exit status here to end the job

LEDGER_JOB = ["sh", "-c",
              "u=$(cat /proc/sys/kernel/random/uuid); "
              f"echo start $u >> {LEDGER}; echo start $u >> {COUNTER}; "
              f"echo $u > {STARTED}; echo $u > {NOTE}; i=0; "
              f"while [ ! -e {STOP} ]; do i=$((i+1)); echo $i >> {LEDGER}; "
              f"echo $i >> {COUNTER}; usleep 50000; done; exit $(cat {STOP})"]


def new_job(label):
    return f"job-{label}-{secrets.token_hex(3)}"


def shared_env(cluster, job):
    return [f"ARCH_SHAREDFS_HOST_PATH={cluster.shared}",
            f"ARCH_WORKDIR_CONTAINER_PATH={WORKDIR}", f"ARCH_JOB_ID={job}"]


def read_file(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def work_file(cluster, job, name, node=None, ns=None):
    return os.path.join(cluster.work_dir(job, node, ns), name)


def parsed(text, what):
    """(uuid, values) of a ledger/counter text; asserts it is readable."""
    assert text is not None, f"{what} cannot be read"
    return workloads.parse_counter(text)


def wait_values(read, minimum, what, timeout=60):
    """Waits until read() (a ledger text) holds at least `minimum` values; returns them."""
    last = [None]

    def enough():
        text = read()
        if text is None:
            return None
        try:
            uuid, values = workloads.parse_counter(text)
        except AssertionError:
            return None
        last[0] = (uuid, values[-5:], len(values))
        return (uuid, values) if len(values) >= minimum else None
    try:
        return proc.wait_until(enough, timeout, f"{what} to hold {minimum} values",
                               interval=0.05)
    except proc.WaitTimeout as e:
        raise AssertionError(f"{e}; last read {last[0]}")


def first_ledger(cluster, node, cid, job, minimum, ns=None):
    """Waits for a freshly started job's ledger in its shared work dir; returns its uuid.
    On a timeout, says what the shared work dir holds (shared mode missing or broken)."""
    path = work_file(cluster, job, LEDGER, node, ns)
    try:
        return wait_values(lambda: read_file(path), minimum, f"{job}'s ledger on node "
                           f"{node.name}", timeout=30)[0]
    except AssertionError as e:
        work = cluster.work_dir(job, node, ns)
        held = sorted(os.listdir(work)) if os.path.isdir(work) else "<missing>"
        raise AssertionError(f"{e}\nshared work dir {work}: {held}\n"
                             f"{node.diagnostics(cid if ns is None else None)}") from None


def check_continues(node, cid, cluster, job, uuid, before, ns=None, read=None):
    """The resumed job's ledger (work dir) and counter (rootfs) go on from where they were:
    same start line, no second start, values 1..N with N past `before`. read(cid, path)
    reads a file inside the container (default: ctr task exec cat)."""
    read = read or node.read
    got_uuid, values = wait_values(
        lambda: read_file(work_file(cluster, job, LEDGER, node, ns)), before + 10,
        f"{job}'s ledger on node {node.name}")
    assert got_uuid == uuid, (f"{job} started again on node {node.name} instead of resuming "
                              f"({got_uuid} != {uuid})\n{node.diagnostics(cid)}")
    workloads.check_sequence(values, f"{job}'s ledger")
    c_uuid, c_values = wait_values(lambda: read(cid, COUNTER), before + 10,
                                   f"{job}'s rootfs counter on node {node.name}")
    assert c_uuid == uuid, (c_uuid, uuid)
    workloads.check_sequence(c_values, f"{job}'s rootfs counter")
    # (ctr task exec can lose a short-lived process's output: read until it says something)
    note = proc.wait_until(lambda: (read(cid, NOTE) or "").strip(), 20,
                           f"{NOTE} in {cid} to be readable")
    assert note == uuid, f"the rootfs change is missing or wrong: {note!r}"
    assert (read_file(work_file(cluster, job, STARTED, node, ns)) or "").strip() == uuid
    return len(values)


def assert_restored_from(node, cid, cluster, job, name, ns=None):
    path = cluster.checkpoint_path(job, name, ns)
    if ns is None:
        msgs = node.log_messages(cid)
    else:
        log = os.path.join(node.ctd.task_dir(ns), cid, "log.json")
        msgs = checkpoint.messages(checkpoint.json_lines(checkpoint.read_text(log)))
    assert any("restored from " + path in m for m in msgs), (
        f"{cid} on node {node.name} was not restored from {path}: {msgs}\n"
        f"{node.diagnostics(cid if ns is None else None)}")


def notice_drain(node):
    """A spot reclaim notice on node's metadata service; waits until archd's drain for it
    is done. Returns (seconds from the notice to the drain done, the drain)."""
    proc.wait_until(lambda: node.archd.status()["watcher"]["state"] == "polling", 20,
                    f"archd on {node.name} to poll its metadata service")
    before = (node.archd.status().get("drain") or {}).get("id")
    node.imds.set_spot(action="terminate", in_seconds=120)
    t0 = time.monotonic()

    def drained():
        d = node.archd.status().get("drain") or {}
        return d if d.get("id") != before and d.get("state") == "done" else None
    drain = proc.wait_until(drained, 120, f"the notice's drain on node {node.name}",
                            interval=0.05)
    return time.monotonic() - t0, drain


def back_in_service(node):
    """The notice is withdrawn and the node undrained (as a replacement node would be)."""
    node.imds.clear_spot()
    node.archctl_json("node", "undrain")


def container_record(node, cid):
    for c in node.archctl_json("container", "list"):
        if c["id"] == cid and c["namespace"] == node.cluster.ns:
            return c
    raise AssertionError(f"{cid} is not in `archctl container list` on node {node.name}")


def stop_job(cluster, node, job, status, ns=None):
    """Asks the job to end with `status` (a file in its work dir, written on `node`)."""
    path = work_file(cluster, job, STOP, node, ns)
    with open(path + ".tmp", "w") as f:
        f.write(f"{status}\n")
    os.rename(path + ".tmp", path)


# ------------------------------------------------------------------ the harness itself

def test_two_nodes_share_a_volume_and_nothing_else(cluster):
    a, b = cluster.a, cluster.b
    # Separate network namespaces, joined through the storage bridge.
    assert a.holder.net != b.holder.net and a.holder.mnt != b.holder.mnt
    for node, other in ((a, b), (b, a)):
        r = node.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"], check=True)
        assert f"{node.address}/24" in r.stdout, r.stdout
        r = node.run([image.BUSYBOX, "ping", "-c", "1", "-W", "5", other.address])
        assert r.returncode == 0, (node.name, r.stdout, r.stderr)
        # containerd, archd and the GlusterFS client run inside the node's namespaces.
        for pid in (node.ctd.proc.pid, node.archd.proc.pid):
            assert twonode.ns_id(pid, "net") == node.holder.net
            assert twonode.ns_id(pid, "mnt") == node.holder.mnt
    # The volume is mounted in each node, not on the host.
    assert not os.path.ismount(cluster.shared)
    assert gluster.is_mounted(a.holder, cluster.shared)
    assert gluster.is_mounted(b.holder, cluster.shared)
    # A file written on A's mount is read on B's (and the other way round).
    probe = f"probe-{secrets.token_hex(3)}"
    a.run(["sh", "-c", f"echo from-a > {cluster.shared}/{probe}"], check=True)
    assert b.run(["cat", f"{cluster.shared}/{probe}"], check=True).stdout == "from-a\n"
    b.run(["sh", "-c", f"echo from-b >> {cluster.shared}/{probe}"], check=True)
    assert read_file(a.path(f"{cluster.shared}/{probe}")) == "from-a\nfrom-b\n"
    os.unlink(a.path(f"{cluster.shared}/{probe}"))
    # An ARCH-enabled container on each node; each containerd and archd sees only its own.
    ids = {}
    for node in (a, b):
        ids[node.name] = f"harness-{node.name}-{secrets.token_hex(3)}"
        node.start_container(ids[node.name], workloads.counter("/data/c.txt", 50))
    for node in (a, b):
        other = ids["b" if node is a else "a"]
        listed = node.ctr("containers", "ls", "-q", check=True).stdout.split()
        assert ids[node.name] in listed and other not in listed, listed
        records = [c["id"] for c in node.archctl_json("container", "list")]
        assert ids[node.name] in records and other not in records, records
        wait_values(lambda: node.read(ids[node.name], "/data/c.txt"), 3,
                    f"the counter on node {node.name}")
    for node in (a, b):
        node.ctr("task", "kill", "-s", "SIGKILL", ids[node.name], check=True)
        node.delete(ids[node.name])


# ------------------------------------------------------------------ the scenarios

def test_job_moves_a_to_b_to_a_and_finishes(cluster):
    """Reclaim notice on A -> resumed on B -> checkpointed on B -> resumed on A -> exit 0."""
    a, b = cluster.a, cluster.b
    job = new_job("ledger")
    env = shared_env(cluster, job)

    # 1. Starts on node A.
    cid_a = f"{job}-a1"
    a.start_container(cid_a, LEDGER_JOB, env)
    uuid = first_ledger(cluster, a, cid_a, job, 10)
    rec = container_record(a, cid_a)
    assert rec["key"] == job, rec
    assert "ARCH_JOB_ID" in str(rec.get("key_source", "")).upper(), rec

    # 2. A reclaim notice on A: archd drains the node, the job is checkpointed and ends.
    seconds, drain = notice_drain(a)
    record("notice_to_checkpointed_on_a_s", seconds)
    results = {x["id"]: x for x in drain["report"]["containers"]}
    assert results.get(cid_a, {}).get("result") == "checkpointed", (drain, a.diagnostics(cid_a))
    TIMINGS["drain_report_seconds_a"] = drain["report"]["total_seconds"]
    gen1 = cluster.committed(job, a)
    assert len(gen1) == 1, gen1
    assert os.path.isfile(os.path.join(cluster.checkpoint_dir(job, a), gen1[0], "manifest.json"))
    # The work dir is not in the checkpoint; it stays where it is.
    assert not os.path.exists(os.path.join(cluster.checkpoint_dir(job, a), gen1[0], "work"))
    count_at_1 = len(parsed(read_file(work_file(cluster, job, LEDGER, a)), "ledger")[1])
    # Checkpointed by ARCH (ended with SIGKILL): deleting the container keeps the checkpoint.
    assert a.delete(cid_a) == 137
    assert cluster.committed(job, a) == gen1
    back_in_service(a)

    # 3. The orchestrator starts the job on node B, as a new container.
    cid_b = f"{job}-b1"
    t0 = time.monotonic()
    b.start_container(cid_b, LEDGER_JOB, env)
    record("create_to_running_on_b_s", time.monotonic() - t0)
    assert_restored_from(b, cid_b, cluster, job, gen1[0])
    assert container_record(b, cid_b)["key"] == job
    count_b = check_continues(b, cid_b, cluster, job, uuid, count_at_1)

    # 4. Checkpointed again on B; resumed on A (a second restore, on the first node).
    out = b.archctl_json("container", "checkpoint", f"{cluster.ns}/{cid_b}", timeout=180)
    gen2 = os.path.basename(out["checkpoint"].rstrip("/"))
    assert out["checkpoint"].startswith(os.path.join(cluster.shared, "checkpoint")), out
    assert b.delete(cid_b) == 137
    gens = cluster.committed(job, b)
    assert gens[-1] == gen2 and gen1[0] in gens and len(gens) == 2, gens  # keep = 2
    count_at_2 = len(parsed(read_file(work_file(cluster, job, LEDGER, b)), "ledger")[1])
    assert count_at_2 > count_b - 1

    cid_a2 = f"{job}-a2"
    t0 = time.monotonic()
    a.start_container(cid_a2, LEDGER_JOB, env)
    record("create_to_running_on_a_again_s", time.monotonic() - t0)
    assert_restored_from(a, cid_a2, cluster, job, gen2)
    check_continues(a, cid_a2, cluster, job, uuid, count_at_2)

    # 5. The job finishes (exit 0): deleting it removes its checkpoints, keeps its output.
    stop_job(cluster, a, job, 0)
    assert a.delete(cid_a2) == 0
    assert not os.path.exists(cluster.checkpoint_dir(job, a)), (
        f"a finished job's checkpoints are still there: {os.listdir(cluster.checkpoint_dir(job, a))}"
        f"\n{a.diagnostics(cid_a2)}")
    assert not os.path.exists(cluster.checkpoint_dir(job, b))  # as B sees the volume
    final_uuid, final = parsed(read_file(work_file(cluster, job, LEDGER, b)), "ledger")
    assert final_uuid == uuid
    workloads.check_sequence(final, f"{job}'s final ledger")
    assert len(final) > count_at_2


def test_crashed_job_keeps_its_checkpoints(cluster):
    """A job that crashes (exit 3) after a resume keeps its checkpoints for the retry."""
    a, b = cluster.a, cluster.b
    job = new_job("crash")
    env = shared_env(cluster, job)
    cid_b = f"{job}-b1"
    b.start_container(cid_b, LEDGER_JOB, env)
    uuid = first_ledger(cluster, b, cid_b, job, 5)
    b.archctl_json("container", "checkpoint", f"{cluster.ns}/{cid_b}", timeout=180)
    assert b.delete(cid_b) == 137
    gens = cluster.committed(job, b)
    assert len(gens) == 1, gens
    count = len(parsed(read_file(work_file(cluster, job, LEDGER, b)), "ledger")[1])

    cid_a = f"{job}-a1"
    a.start_container(cid_a, LEDGER_JOB, env)
    assert_restored_from(a, cid_a, cluster, job, gens[0])
    check_continues(a, cid_a, cluster, job, uuid, count)
    stop_job(cluster, a, job, 3)
    assert a.delete(cid_a) == 3
    assert cluster.committed(job, a) == gens, "a crashed job's checkpoint was removed"
    assert cluster.committed(job, b) == gens

    # Garbage collection by age removes it once it is old enough. The shared store is named:
    # no container on this node uses it any more, so the node would not know of it.
    store = os.path.join(cluster.shared, "checkpoint")
    r = a.archctl("checkpoint", "gc", "--older-than", "1h", "--store", store)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert cluster.committed(job, a) == gens, "gc --older-than 1h removed a fresh checkpoint"
    def collected():
        r = a.archctl("checkpoint", "gc", "--older-than", "1s", "--store", store)
        assert r.returncode == 0, (r.stdout, r.stderr)
        return cluster.committed(job, a) == []
    proc.wait_until(collected, 30, "gc --older-than 1s to remove the checkpoint", interval=0.5)


@pytest.mark.parametrize("source", ["AWS_BATCH_JOB_ID", "kubernetes"])
def test_orchestrator_identity_is_the_key_across_nodes(cluster, source):
    """Without ARCH_JOB_ID, the key comes from the orchestrator: AWS Batch's job id (an
    array child's "uuid:index" made a valid name), or a Kubernetes pod with a stable name
    (CRI annotations); a new container of the same job on the other node resumes."""
    a, b = cluster.a, cluster.b
    tag = secrets.token_hex(3)
    common = [f"ARCH_SHAREDFS_HOST_PATH={cluster.shared}",
              f"ARCH_WORKDIR_CONTAINER_PATH={WORKDIR}"]
    if source == "AWS_BATCH_JOB_ID":
        batch_id = f"8f1e62d4-{tag}-4c1e-9d1a-0242ac120002:7"
        env, annotations = common + [f"AWS_BATCH_JOB_ID={batch_id}"], []
        key = batch_id.replace(":", "_")
    else:
        pod_ns, pod = f"team-{tag}", "trainer-0"  # a StatefulSet's stable pod name
        env = common
        annotations = ["io.kubernetes.cri.container-type=container",
                       f"io.kubernetes.cri.sandbox-namespace={pod_ns}",
                       f"io.kubernetes.cri.sandbox-name={pod}",
                       "io.kubernetes.cri.container-name=main"]
        key = f"k8s-{pod_ns}-{pod}-main"
    extra = [x for ann in annotations for x in ("--annotation", ann)]

    def start(node, cid):
        node.containers.append(cid)
        args = ["run", "-d", "--runc-root", node.runc_root, "--runc-binary",
                cluster.bin.arch_runc, "--log-uri", "file://" + node.output_path(cid),
                "--env", "ARCH_ENABLE=1", *extra]
        for item in env:
            args += ["--env", item]
        r = node.ctr(*args, cluster.image, cid, *LEDGER_JOB, timeout=120)
        assert r.returncode == 0, f"ctr run {cid} on {node.name}: {r.stderr}"
        node.wait_status(cid, "RUNNING")

    cid_b = f"id-{tag}-b1"
    start(b, cid_b)
    rec = container_record(b, cid_b)
    assert (rec["key"], rec.get("key_source")) == (key, source), rec
    uuid = first_ledger(cluster, b, cid_b, key, 5)
    out = b.archctl_json("container", "checkpoint", f"{cluster.ns}/{cid_b}", timeout=180)
    assert out["checkpoint"].startswith(cluster.checkpoint_path(key, "ckpt-")), out
    assert b.delete(cid_b) == 137
    gens = cluster.committed(key, b)
    count = len(parsed(read_file(work_file(cluster, key, LEDGER, b)), "ledger")[1])

    cid_a = f"id-{tag}-a1"
    start(a, cid_a)
    assert container_record(a, cid_a)["key"] == key
    assert_restored_from(a, cid_a, cluster, key, gens[-1])
    check_continues(a, cid_a, cluster, key, uuid, count)
    a.ctr("task", "kill", "-s", "SIGKILL", cid_a, check=True)
    a.delete(cid_a)


@pytest.fixture(scope="module")
def docker_nodes(cluster, workload_image):
    """A private dockerd on each node (runtime "arch"), on that node's containerd."""
    skip_unless_binaries(daemons.DOCKERD, daemons.docker_client() or "docker")
    for node in (cluster.a, cluster.b):
        node.start_docker(workload_image.docker)
    return cluster


def docker_run(node, name, argv, env):
    args = ["run", "-d", "--runtime", "arch", "--name", name, "-e", "ARCH_ENABLE=1"]
    for item in env:
        args += ["-e", item]
    r = node.docker(*args, node.cluster.image, *argv, timeout=120)
    assert r.returncode == 0, f"node {node.name}: docker run {name}: {r.stderr}\n" \
                              f"{node.diagnostics()}"
    return node.dockerd.inspect(name, "{{.Id}}")


def docker_read(node):
    def read(name, path):
        r = node.docker("exec", name, "cat", path)
        return r.stdout if r.returncode == 0 else None
    return read


def docker_delete(node, name):
    """Waits until the container has exited and archd has its exit status; `docker rm`."""
    full = node.dockerd.inspect(name, "{{.Id}}")
    proc.wait_until(lambda: node.dockerd.inspect(name, "{{.State.Running}}") == "false", 60,
                    f"{name} to exit on node {node.name}", interval=0.05)
    status = proc.wait_until(lambda: node.exit_record(full, "moby") is not None and
                             (node.exit_record(full, "moby"),), 60,
                             f"archd on {node.name} to record the exit of {name}")[0]
    r = node.docker("rm", name)
    assert r.returncode == 0, f"node {node.name}: docker rm {name}: {r.stderr}"
    return status


def test_docker_job_moves_a_to_b_and_finishes(docker_nodes):
    """The same flow through Docker on both nodes: reclaim notice on A, `docker run` of the
    job under a new name on B resumes it, exit 0 and `docker rm` remove its checkpoints."""
    cluster = docker_nodes
    a, b = cluster.a, cluster.b
    job = new_job("docker")
    env = shared_env(cluster, job)
    name_a = f"{job}-a1"
    id_a = docker_run(a, name_a, LEDGER_JOB, env)
    uuid = first_ledger(cluster, a, name_a, job, 10, "moby")

    seconds, drain = notice_drain(a)
    record("docker_notice_to_checkpointed_on_a_s", seconds)
    results = {x["id"]: x for x in drain["report"]["containers"] if x["namespace"] == "moby"}
    assert results.get(id_a, {}).get("result") == "checkpointed", drain
    gens = cluster.committed(job, a, "moby")
    assert len(gens) == 1, gens
    count = len(parsed(read_file(work_file(cluster, job, LEDGER, a, "moby")), "ledger")[1])
    assert docker_delete(a, name_a) == 137
    assert cluster.committed(job, a, "moby") == gens
    back_in_service(a)

    name_b = f"{job}-b1"
    t0 = time.monotonic()
    id_b = docker_run(b, name_b, LEDGER_JOB, env)
    record("docker_create_to_running_on_b_s", time.monotonic() - t0)
    assert_restored_from(b, id_b, cluster, job, gens[0], ns="moby")
    check_continues(b, name_b, cluster, job, uuid, count, ns="moby", read=docker_read(b))

    stop_job(cluster, b, job, 0, "moby")
    assert docker_delete(b, name_b) == 0
    assert not os.path.exists(cluster.checkpoint_dir(job, b, "moby")), \
        "a finished job's checkpoints are still there"
    final_uuid, final = parsed(read_file(work_file(cluster, job, LEDGER, b, "moby")), "ledger")
    assert final_uuid == uuid
    workloads.check_sequence(final, f"{job}'s final ledger")


MEMORY_MIB = 256  # big enough that writing its pages to the volume takes a while


# ------------------------------------------------------------------ a short spot day

def spot_job(n):
    """A CPU-bound job (issue 14's spot day): n steps of a hash held only in memory; its
    progress every 20000 steps and its result at the end go to the work dir."""
    return ["sh", "-c",
            f"i=0; h=0; while [ $i -lt {n} ]; do h=$(( (h*31 + i) % 1000000007 )); "
            f"i=$((i+1)); [ $((i % 20000)) -eq 0 ] && echo $i > progress.txt; done; "
            f"echo $h > result.txt; exit 0"]


def spot_result(n):
    h = 0
    for i in range(n):
        h = (h * 31 + i) % 1000000007
    return h


def test_spot_day_short_job_resumed_twice_gives_the_uninterrupted_result(cluster):
    """Two reclaim notices, each resumed on the other node (A -> B -> A): the job's result
    equals the uninterrupted computation's (bench/spot_day.py is the long version)."""
    n = 6000000  # ~10-20 s of one CPU
    job = new_job("spot")
    env = shared_env(cluster, job)
    nodes = [cluster.a, cluster.b]
    node, cid = nodes[0], f"{job}-0"
    node.start_container(cid, spot_job(n), env)
    progress = work_file(cluster, job, "progress.txt", node)

    def steps():
        text = (read_file(progress) or "").strip()
        return int(text) if text.isdigit() else 0
    for k in (1, 2):
        proc.wait_until(lambda: steps() >= k * n // 4, 120, f"{job} to pass {k}/4",
                        interval=0.1)
        _, drain = notice_drain(node)
        results = {x["id"]: x for x in drain["report"]["containers"]}
        assert results.get(cid, {}).get("result") == "checkpointed", (
            results.get(cid), node.diagnostics(cid))
        assert node.delete(cid) == 137
        back_in_service(node)
        gen = cluster.committed(job, node)[-1]
        node, cid = nodes[k % 2], f"{job}-{k}"
        node.start_container(cid, spot_job(n), env)
        assert_restored_from(node, cid, cluster, job, gen)
    result = work_file(cluster, job, "result.txt", node)
    text = proc.wait_until(lambda: (read_file(result) or "").strip(), 300,
                           f"{job}'s result", interval=0.2)
    assert int(text) == spot_result(n), text
    assert node.delete(cid) == 0


def test_node_killed_mid_checkpoint_resumes_from_previous_generation(cluster):
    """Node A dies (every process SIGKILLed) while a checkpoint is being written to the
    volume: node B resumes the job from the previous committed generation. Runs last: it
    kills node A."""
    a, b = cluster.a, cluster.b
    job = new_job("kill")
    env = shared_env(cluster, job)
    ticks = "/data/ticks.txt"
    argv = workloads.memory(ticks, "/data/sums.txt", mib=MEMORY_MIB, ms=50)
    cid_a = f"{job}-a1"
    a.start_container(cid_a, argv, env)
    uuid, _ = wait_values(lambda: a.read(cid_a, ticks), 5, f"{job}'s ticks on a")

    # Generation 1, committed; the job keeps running.
    out = a.archctl_json("container", "checkpoint", f"{cluster.ns}/{cid_a}", "--leave-running",
                         timeout=180)
    gen1 = os.path.basename(out["checkpoint"].rstrip("/"))
    assert cluster.committed(job, a) == [gen1]
    wait_values(lambda: a.read(cid_a, ticks), 5, f"{job}'s ticks after generation 1")

    # Generation 2 is being written when the node dies.
    key_dir = cluster.checkpoint_dir(job, a)
    writer = a.popen([cluster.bin.archctl, "container", "checkpoint", f"{cluster.ns}/{cid_a}"],
                     stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))

    def writing():
        if writer.poll() is not None:
            raise AssertionError(f"the second checkpoint finished (exit {writer.returncode}) "
                                 f"before it could be interrupted: raise MEMORY_MIB")
        for name in os.listdir(key_dir):
            if name.startswith("staging-"):
                size = 0
                for root, _dirs, files in os.walk(os.path.join(key_dir, name)):
                    for f in files:
                        try:
                            size += os.path.getsize(os.path.join(root, f))
                        except OSError:
                            pass
                if size > 8 << 20:
                    return (name, size)
        return None
    staging, size = proc.wait_until(writing, 120, "the second checkpoint's images to be written",
                                    interval=0.01)
    killed = a.kill()
    writer.wait(10)
    programs = sorted({os.path.basename(c.split(" ", 1)[0]) for c in killed.values()})
    print(f"\nnode a killed while {staging} held {size >> 20} MiB; "
          f"{len(killed)} processes SIGKILLed: {', '.join(programs)}")
    assert cluster.committed(job, b) == [gen1], "generation 2 was committed after all"

    # The orchestrator starts the job on node B: it resumes from generation 1.
    cid_b = f"{job}-b1"
    t0 = time.monotonic()
    b.start_container(cid_b, argv, env)
    record("create_to_running_on_b_after_node_loss_s", time.monotonic() - t0)
    assert_restored_from(b, cid_b, cluster, job, gen1)
    got_uuid, values = wait_values(lambda: b.read(cid_b, ticks), 10, f"{job}'s ticks on b")
    assert got_uuid == uuid, "the job started from zero instead of resuming"
    workloads.check_sequence(values, f"{job}'s ticks")
    # Its memory came back bit for bit: the checksum it computes matches the pattern model.
    b.ctr("task", "kill", "-s", "SIGUSR1", cid_b, check=True)

    def answered():
        sums = workloads.parse_sums(b.read(cid_b, "/data/sums.txt") or "")
        return sums[-1] if sums else None
    tick, crc = proc.wait_until(answered, 30, f"{cid_b} to write a checksum", interval=0.05)
    assert crc == workloads.expected_memory_crc(tick, mib=MEMORY_MIB), (
        f"{job}'s memory on node b does not match the pattern at tick {tick}")
    # The half-written generation is never restored; a later checkpoint cleans it up.
    b.archctl_json("container", "checkpoint", f"{cluster.ns}/{cid_b}", timeout=180)
    left = [n for n in os.listdir(cluster.checkpoint_dir(job, b)) if n.startswith("staging-")]
    assert not left, f"the dead writer's staging directory is still there: {left}"
    assert b.delete(cid_b) == 137
