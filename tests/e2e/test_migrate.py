"""Live migration (issue 16): `archctl container migrate NS/ID --to NODE`, post-copy.

Two nodes on this machine (archtest/twonode.py: each its own network and mount namespace,
containerd and archd, one node key), with NO shared file system: each node's containers use
its own local store ([store] path under the node's directory). The archds talk over the peer
channel ([peers], mutual TLS from the node key). The source freezes and dumps the container
(tasks held frozen), streams the sealed manifest, the non-memory images and the rootfs diff;
the destination re-creates the container through its containerd and arch-runc, which
restores it lazily, every 1 MiB chunk of memory fetched from the source archd and checked
against the sealed digest.

- A ledger (a counter appending 1, 2, 3 ... to a file, fsync'd) goes A → B → A: the same
  process (start line) goes on with no number missing or repeated; after each move the
  source's container and generation are gone.
- The destination refusing (image missing there) leaves the source running, never frozen
  for long, its ledger intact.
- A 256 MiB job migrates with post-copy and its memory checks bit for bit afterwards.
- A Docker container (a private dockerd per node, runtime "arch") goes A → B → A: re-created
  by B's Docker under the same name and restart policy (a new container id, the job key kept
  through ARCH_JOB_ID), the same process going on; gone from A's Docker, never restarted
  there by its restart policy. B's Docker without the image refuses before anything is
  frozen; a container with a bind mount is refused by the source; hostile Docker offers
  (names and images that read as options or paths) are refused by the destination.
- The source's archd killed during post-copy: the destination's page server fails closed
  (the container is killed, never run on zero pages); a later create there falls back to
  the newest stored generation that is usable (none here: it starts fresh; said in README).
- Attacks: a peer asking pages.read for an export not registered for it, or outside the
  file, is refused; a "node" whose certificate comes from another key can neither migrate
  into a node nor read pages from it (the TLS handshake refuses it).
No timing assertions: bench/migrate.py measures.
"""

import json
import os
import signal
import socket
import ssl
import struct
import subprocess

import pytest

from archtest import checkpoint, daemons, proc, twonode, workloads
from conftest import (archd_path, archctl_path, arch_runc_path, criu_path,
                      skip_unless_binaries, skip_unless_root)


@pytest.fixture(scope="module")
def cluster(e2e_dir, workload_image, archctl_cli):
    skip_unless_root()
    skip_unless_binaries(archd_path(), twonode.NSENTER, twonode.UNSHARE)
    binaries = twonode.Binaries(arch_runc_path(), archctl_path(), archd_path(), criu_path())
    with twonode.peer_cluster(os.path.join(e2e_dir, "migrate"), binaries, workload_image.name,
                              workload_image.oci) as c:
        yield c


def migrate(node, cluster, cid, to, ok=True, ns=None):
    """ns: the containerd namespace (default the cluster's; "moby" for Docker's containers,
    whose tasks live in their dockerd's cgroup parent, not tracked here)."""
    r = node.archctl("container", "migrate", f"{ns or cluster.ns}/{cid}", "--to", to, "-o",
                     "json", timeout=300)
    if ok:
        assert r.returncode == 0, (f"migrate {cid} {node.name} → {to}: {r.stdout}\n{r.stderr}\n"
                                   f"{node.diagnostics(cid)}\n{cluster.nodes[to].diagnostics(cid)}")
        report = json.loads(r.stdout)
        assert report["phase"] == "done", report
        print(f"\nmigrate {cid} {node.name} → {to}: total {report['ms']['total']:.0f} ms, "
              f"downtime {report['ms']['downtime']:.0f} ms, bytes {report['bytes']}")
        if ns is None:
            cluster.nodes[to].containers.append(cid)
            cluster.migrated.append((to, cid))
        return report
    assert r.returncode != 0, r.stdout
    return r.stdout + r.stderr


def ledger(node, cid, path="/data/count.txt"):
    text = node.read(cid, path)
    return workloads.parse_counter(text or "start ?\n")


def wait_ledger(node, cid, n, path="/data/count.txt"):
    try:
        return proc.wait_until(lambda: (lambda u, v: (u, v) if len(v) >= n else None)(
            *ledger(node, cid, path)), 60, f"{cid} on {node.name} to count to {n}",
            interval=0.05)
    except proc.WaitTimeout as e:
        activity = checkpoint.read_text(os.path.join(node.conf.state, "activity.jsonl"), 4000)
        raise AssertionError(f"{e}: it is {node.status(cid)}\n{activity}\n"
                             f"{node.diagnostics(cid)}")


def gone_from(node, cid):
    return node.ctr("containers", "info", cid).returncode != 0


def committed(node, cluster, key):
    d = os.path.join(node.conf.store, cluster.ns, key)
    try:
        return sorted(n for n in os.listdir(d) if n.startswith("ckpt-"))
    except FileNotFoundError:
        return []


def test_ledger_moves_a_to_b_to_a_without_gap_or_repeat(cluster):
    a, b = cluster.a, cluster.b
    cid = checkpoint.new_id("mig-ledger")
    argv = workloads.counter("/data/count.txt", ms=20)
    a.start_container(cid, argv, env=[f"ARCH_JOB_ID={cid}"])
    uuid0, before = wait_ledger(a, cid, 5)
    migrate(a, cluster, cid, "b")
    b.wait_status(cid, "RUNNING")
    uuid1, values = wait_ledger(b, cid, len(before) + 5)
    assert uuid1 == uuid0, "the job started again on b instead of going on"
    workloads.check_sequence(values, "ledger on b")
    assert gone_from(a, cid), "the source's container is still there after the migration"
    assert committed(a, cluster, cid) == [], "the source kept its migration generation"
    migrate(b, cluster, cid, "a")
    a.wait_status(cid, "RUNNING")
    uuid2, values = wait_ledger(a, cid, len(values) + 5)
    assert uuid2 == uuid0, "the job started again on a instead of going on"
    workloads.check_sequence(values, "ledger back on a")
    assert gone_from(b, cid)
    # Events: the source's archd logged the migration with its figures.
    events = b.archd.events() if hasattr(b.archd, "events") else None
    if events is not None:
        assert any(e.get("kind") == "migrate" for e in events), events
    a.ctr("task", "kill", "-s", "SIGKILL", cid)
    a.delete(cid)


def test_destination_without_the_image_leaves_the_source_running(cluster):
    a, b = cluster.a, cluster.b
    cid = checkpoint.new_id("mig-noimage")
    # The image under another name, present on a only.
    other = cluster.image + "-only-on-a"
    a.ctr("images", "tag", cluster.image, other, check=True)
    a.start_container(cid, workloads.counter("/data/count.txt", ms=20), image=other,
                      env=[f"ARCH_JOB_ID={cid}"])
    uuid0, before = wait_ledger(a, cid, 5)
    out = migrate(a, cluster, cid, "b", ok=False)
    assert "not in containerd" in out and other in out, out
    assert a.status(cid) == "RUNNING"
    uuid1, values = wait_ledger(a, cid, len(before) + 5)
    assert uuid1 == uuid0
    workloads.check_sequence(values, "ledger on a after the refused migration")
    assert gone_from(b, cid)
    assert committed(a, cluster, cid) == [] and committed(b, cluster, cid) == []
    a.ctr("task", "kill", "-s", "SIGKILL", cid)
    a.delete(cid)


def request_sum(node, cid, after_tick):
    node.ctr("task", "kill", "-s", "SIGUSR1", cid, check=True)

    def answered():
        sums = workloads.parse_sums(node.read(cid, "/data/sums.txt") or "")
        return next(((t, crc) for t, crc in sums if t > after_tick), None)

    return proc.wait_until(answered, 60, f"{cid} to write a checksum", interval=0.05)


def test_256m_job_moves_with_post_copy_memory_bit_for_bit(cluster):
    a, b = cluster.a, cluster.b
    cid = checkpoint.new_id("mig-256m")
    mib = 256
    a.start_container(cid, workloads.memory("/data/ticks.txt", "/data/sums.txt", mib=mib),
                      env=[f"ARCH_JOB_ID={cid}"])
    wait_ledger(a, cid, 3, "/data/ticks.txt")
    tick, crc = request_sum(a, cid, 0)
    assert crc == workloads.expected_memory_crc(tick, mib)
    report = migrate(a, cluster, cid, "b")
    assert report["bytes"]["pages"] >= mib << 20, report
    assert report["bytes"]["post_copy"] >= report["bytes"]["pages"], report
    assert report["bytes"]["transfer"] < report["bytes"]["pages"] // 4, (
        "memory went in the stream instead of post-copy", report)
    _, values = wait_ledger(b, cid, 3, "/data/ticks.txt")
    workloads.check_sequence(values, "ticks on b")
    tick2, crc2 = request_sum(b, cid, len(values))
    assert crc2 == workloads.expected_memory_crc(tick2, mib), (
        f"memory after the migration does not match the pattern at tick {tick2}")
    b.ctr("task", "kill", "-s", "SIGKILL", cid)
    b.delete(cid)


# ------------------------------------------------------------------ Docker

@pytest.fixture(scope="module")
def docker_cluster(cluster, workload_image):
    """The cluster with a private dockerd on each node (runtime "arch" = arch-runc), which
    twonode's [peers] migrate_docker* and [docker] data_root name."""
    skip_unless_binaries(daemons.DOCKERD, daemons.docker_client() or "docker")
    for node in (cluster.a, cluster.b):
        if node.dockerd is None:
            node.start_docker(workload_image.docker)
    return cluster


def docker_run(node, name, argv, env=(), image=None, extra=()):
    args = ["run", "-d", "--runtime", "arch", "--name", name, "-e", "ARCH_ENABLE=1", *extra]
    for item in env:
        args += ["-e", item]
    r = node.docker(*args, image or node.cluster.image, *argv, timeout=120)
    assert r.returncode == 0, f"node {node.name}: docker run {name}: {r.stderr}\n" \
                              f"{node.diagnostics()}"
    return node.dockerd.inspect(name, "{{.Id}}")


def docker_inspect(node, name, template):
    r = node.docker("inspect", "-f", template, name)
    return r.stdout.strip() if r.returncode == 0 else None


def docker_ledger(node, name, path="/data/count.txt"):
    r = node.docker("exec", name, "cat", path)
    return workloads.parse_counter(r.stdout if r.returncode == 0 else "start ?\n")


def wait_docker_ledger(node, name, n):
    try:
        return proc.wait_until(lambda: (lambda u, v: (u, v) if len(v) >= n else None)(
            *docker_ledger(node, name)), 60, f"{name} on {node.name} to count to {n}",
            interval=0.05)
    except proc.WaitTimeout as e:
        activity = checkpoint.read_text(os.path.join(node.conf.state, "activity.jsonl"), 4000)
        raise AssertionError(f"{e}: {docker_inspect(node, name, '{{.State.Status}}')}\n"
                             f"{activity}\n{node.diagnostics()}\n{node.dockerd.log_tail()}")


def restores_of(node, cid):
    text = checkpoint.read_text(os.path.join(node.conf.state, "activity.jsonl"))
    return [r for r in checkpoint.json_lines(text)
            if r.get("what") == "restore" and r.get("id") == cid]


def docker_generations(node, key):
    d = os.path.join(node.conf.store, "moby", key)
    try:
        return sorted(n for n in os.listdir(d) if n.startswith("ckpt-"))
    except FileNotFoundError:
        return []


def test_docker_ledger_moves_a_to_b_to_a_under_docker(docker_cluster):
    cluster = docker_cluster
    a, b = cluster.a, cluster.b
    name = checkpoint.new_id("mig-docker")
    # No ARCH_JOB_ID: the key is the container id, which the destination's Docker changes.
    id_a = docker_run(a, name, workloads.counter("/data/count.txt", ms=20),
                      extra=["--restart", "always", "--label", "team=ledger"])
    uuid0, before = wait_docker_ledger(a, name, 5)
    try:
        report = migrate(a, cluster, id_a, "b", ns="moby")
        assert report.get("engine") == "docker" and report.get("name") == name, report
        id_b = report["destination_id"]
        assert id_b != id_a and docker_inspect(b, name, "{{.Id}}") == id_b, report
        assert docker_inspect(b, name, "{{.State.Running}}") == "true"
        assert docker_inspect(b, name, "{{.HostConfig.Runtime}}") == "arch"
        assert docker_inspect(b, name, "{{.HostConfig.RestartPolicy.Name}}") == "always"
        assert docker_inspect(b, name, '{{index .Config.Labels "team"}}') == "ledger"
        env = json.loads(docker_inspect(b, name, "{{json .Config.Env}}"))
        assert f"ARCH_JOB_ID={id_a}" in env, env
        uuid1, values = wait_docker_ledger(b, name, len(before) + 5)
        assert uuid1 == uuid0, "the job started again on b instead of going on"
        workloads.check_sequence(values, "ledger on b")
        assert [r["outcome"] for r in restores_of(b, id_b)] == ["ok"], restores_of(b, id_b)
        # Gone from a's Docker, never restarted there by its policy, its generation removed.
        assert docker_inspect(a, name, "{{.Id}}") is None, "Docker's record lingers on a"
        assert restores_of(a, id_a) == [], "a's dockerd restarted the migrated container"
        assert docker_generations(a, id_a) == []
        # And back: the key is now ARCH_JOB_ID's (the same), the name is free again on a.
        # (archctl's text report this time.)
        r = b.archctl("container", "migrate", f"moby/{id_b}", "--to", "a", timeout=300)
        assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{b.diagnostics()}\n{a.diagnostics()}"
        id_a2 = docker_inspect(a, name, "{{.Id}}")
        assert f"Docker container {name} re-created on a as {id_a2}" in r.stdout, r.stdout
        uuid2, values = wait_docker_ledger(a, name, len(values) + 5)
        assert uuid2 == uuid0, "the job started again on a instead of going on"
        workloads.check_sequence(values, "ledger back on a")
        assert docker_inspect(b, name, "{{.Id}}") is None
    finally:
        for node in (a, b):
            node.docker("rm", "-f", name)


def test_docker_destination_without_the_image_leaves_the_source_running(docker_cluster):
    cluster = docker_cluster
    a, b = cluster.a, cluster.b
    other = cluster.image + "-only-on-a"
    a.docker("tag", cluster.image, other, check=True)
    name = checkpoint.new_id("mig-dnoimage")
    cid = docker_run(a, name, workloads.counter("/data/count.txt", ms=20), image=other,
                     env=[f"ARCH_JOB_ID={name}"], extra=["--restart", "on-failure:3"])
    try:
        uuid0, before = wait_docker_ledger(a, name, 5)
        out = migrate(a, cluster, cid, "b", ok=False, ns="moby")
        assert "not in Docker on node b" in out and other in out, out
        assert docker_inspect(a, name, "{{.State.Running}}") == "true"
        assert docker_inspect(a, name, "{{.HostConfig.RestartPolicy.Name}}") == "on-failure"
        uuid1, values = wait_docker_ledger(a, name, len(before) + 5)
        assert uuid1 == uuid0
        workloads.check_sequence(values, "ledger on a after the refused migration")
        assert docker_inspect(b, name, "{{.Id}}") is None
        assert docker_generations(a, name) == [] and docker_generations(b, name) == []
    finally:
        a.docker("rm", "-f", name)


def test_docker_container_with_a_bind_mount_is_refused_before_freezing(docker_cluster):
    cluster = docker_cluster
    a, b = cluster.a, cluster.b
    host_dir = os.path.join(a.base, "bind-src")
    os.makedirs(host_dir, exist_ok=True)
    name = checkpoint.new_id("mig-dbind")
    cid = docker_run(a, name, workloads.counter("/data/count.txt", ms=20),
                     extra=["-v", f"{host_dir}:/mnt/host"])
    try:
        wait_docker_ledger(a, name, 3)
        out = migrate(a, cluster, cid, "b", ok=False, ns="moby")
        assert "bind mounts" in out or "mounts" in out, out
        assert docker_inspect(a, name, "{{.State.Running}}") == "true"
        assert docker_inspect(b, name, "{{.Id}}") is None
        assert docker_generations(a, cid) == []
    finally:
        a.docker("rm", "-f", name)


# ------------------------------------------------------------------ attacks

def frame(op):
    body = json.dumps(op).encode()
    return struct.pack(">BI", 1, len(body)) + body


def read_frame(tls):
    head = b""
    while len(head) < 5:
        chunk = tls.recv(5 - len(head))
        if not chunk:
            return None, b""
        head += chunk
    kind, n = struct.unpack(">BI", head)
    body = b""
    while len(body) < n:
        chunk = tls.recv(min(65536, n - len(body)))
        if not chunk:
            break
        body += chunk
    return kind, body


def raw_peer(cluster, node, crt, key, requests):
    """TLS client from `node`'s namespace to node a's peer port with crt/key; sends each
    request and reads one frame for it. ("refused", why) when the handshake or the
    connection fails."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(crt, key)

    def attempt():
        with socket.create_connection((cluster.a.address, twonode.PEER_PORT), timeout=10) as raw:
            try:
                with ctx.wrap_socket(raw) as tls:
                    answers = []
                    for r in requests:
                        tls.sendall(frame(r))
                        answers.append(read_frame(tls))
                    return ("answered", answers)
            except (ssl.SSLError, OSError) as e:
                return ("refused", str(e))
    return twonode.in_netns(node.holder.netns_path, attempt)


def test_pages_are_served_only_for_an_export_of_the_asking_peer(cluster):
    b = cluster.b
    peers = os.path.join(b.base, "peers")
    outcome, answers = raw_peer(cluster, b, os.path.join(peers, "node.crt"),
                                os.path.join(peers, "node.key"), [
        {"op": "pages.read", "export": "0" * 32, "file": "pages-1.img", "offset": 0,
         "length": 4096},
        {"op": "pages.read", "export": "../../etc", "file": "../../../etc/shadow", "offset": 0,
         "length": 4096},
        {"op": "pages.read", "export": "0" * 32, "file": "pages-1.img",
         "offset": 2 ** 64 - 4096, "length": 8192},
    ])
    assert outcome == "answered", answers
    for kind, body in answers:
        assert kind == 1, (kind, body[:100])  # a JSON frame, never bulk bytes
        assert "no such page export" in json.loads(body)["error"], body


def test_hostile_docker_offers_are_refused_by_the_destination(cluster):
    """b (a real peer) offers a Docker container whose name or image would read as an option
    or a path, or whose environment would copy archd's own variables: a refuses each before
    running anything."""
    b = cluster.b
    peers = os.path.join(b.base, "peers")
    base = {"op": "migrate.offer", "engine": "docker", "ns": "moby", "id": "d" * 64,
            "image": cluster.image, "args": ["sh"], "env": ["ARCH_ENABLE=1"], "cwd": "/",
            "docker": {"name": "evil", "user": "", "hostname": "", "labels": {},
                       "restart": "no", "restart_max": 0, "network": "", "memory": 0,
                       "nano_cpus": 0, "shm_size": 0, "read_only": False, "init": False,
                       "auto_remove": False}}
    hostile = []
    for name in ("-evil", "--privileged", "a/b", "../x"):
        hostile.append(dict(base, docker=dict(base["docker"], name=name)))
    for image in ("--privileged", "-v"):
        hostile.append(dict(base, image=image))
    hostile.append(dict(base, env=["ARCH_ENABLE=1", "PATH"]))
    hostile.append(dict(base, ns="default"))
    hostile.append(dict(base, engine="podman"))
    for offer in hostile:
        outcome, answers = raw_peer(cluster, b, os.path.join(peers, "node.crt"),
                                    os.path.join(peers, "node.key"), [offer])
        assert outcome == "answered", answers
        kind, body = answers[0]
        assert kind == 1, body[:200]
        error = json.loads(body).get("error", "")
        assert "malformed" in error or "unknown engine" in error, (offer, error)


def test_a_node_with_another_key_can_neither_migrate_in_nor_read_pages(cluster, e2e_dir):
    from test_peer_groups import foreign_identity
    base = os.path.join(e2e_dir, "mig-intruder-" + checkpoint.new_id("x"))
    crt, key = foreign_identity(base, "b")
    outcome, detail = raw_peer(cluster, cluster.b, crt, key, [
        {"op": "migrate.offer", "ns": cluster.ns, "id": "evil", "image": cluster.image,
         "args": ["sh"], "env": ["ARCH_ENABLE=1"], "cwd": "/"},
        {"op": "pages.read", "export": "0" * 32, "file": "pages-1.img", "offset": 0,
         "length": 4096},
    ])
    assert outcome == "refused" or all(k is None for k, _ in detail), (outcome, detail)
    assert cluster.a.ctr("containers", "info", "evil").returncode != 0


# ------------------------------------------------------------------ the source dies

def exports_dir(node):
    return os.path.join(node.conf.state, "migrate-exports")


def export_records(node):
    try:
        return sorted(n for n in os.listdir(exports_dir(node)) if n.endswith(".json"))
    except FileNotFoundError:
        return []


def export_progress(node, name):
    """(chunks sent, chunks in all) of export record `name`, from its files."""
    with open(os.path.join(exports_dir(node), name)) as f:
        files = json.load(f)["files"]
    total = sum((size + (1 << 20) - 1) >> 20 for size in files.values())
    journal = os.path.join(exports_dir(node), name[:-len(".json")] + ".served")
    with open(journal) as f:
        return len(f.read().splitlines()), total


def migration_under_way(cluster, prefix, mib):
    """Starts a memory job on a, migrates it to b in the background, and returns as soon as b
    runs it (its pages still coming): (cid, uuid at the start, the archctl process)."""
    a, b = cluster.a, cluster.b
    cid = checkpoint.new_id(prefix)
    argv = workloads.memory("/data/ticks.txt", "/data/sums.txt", mib=mib, ms=20)
    a.start_container(cid, argv, env=[f"ARCH_JOB_ID={cid}"])
    uuid0, _ = wait_ledger(a, cid, 3, "/data/ticks.txt")
    b.containers.append(cid)
    cluster.migrated.append(("b", cid))
    mig = a.popen([cluster.bin.archctl, "container", "migrate", f"{cluster.ns}/{cid}", "--to",
                   "b", "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.wait_until(lambda: b.status(cid) == "RUNNING", 120, f"{cid} to run on b",
                        interval=0.01)
    except BaseException:
        mig.kill()
        mig.wait()
        raise
    return cid, uuid0, mig


def restart_source_during_post_copy(cluster, crash, planted=(), mib=256):
    """Migrates a memory job a → b; as soon as b runs it (its pages still coming) a's archd is
    stopped by pid (SIGTERM, or SIGKILL when `crash`), then started again. Returns (cid,
    uuid at the start, (chunks sent, chunks in all) when archd stopped), the last None when
    post-copy was over before archd stopped. `planted`: export records the caller put there."""
    a = cluster.a
    cid, uuid0, mig = migration_under_way(cluster, "mig-restart", mib)
    try:
        if crash:
            a.archd.kill()
        else:
            assert a.archd.stop(timeout=60) == 0, a.archd.log_text()
        out, err = mig.communicate(timeout=60)
        print(f"\nmigrate, its archd {'killed' if crash else 'stopped'}: {out.decode()[-2000:]}"
              f"{err.decode()[-2000:]}")
    finally:
        if mig.poll() is None:
            mig.kill()
            mig.wait()
    records = [n for n in export_records(a) if n not in planted]
    assert len(records) <= 1, records
    progress = export_progress(a, records[0]) if records else None
    a.archd.start()
    return cid, uuid0, progress


def plant_hostile_exports(node, cluster):
    """Export records an attacker (or a bad disk) might leave: each must be ignored."""
    d = exports_dir(node)
    os.makedirs(d, mode=0o700, exist_ok=True)
    store = node.conf.store
    good = {"version": 1, "peer": "b", "files": {"pages-1.img": 4096}, "namespace": cluster.ns,
            "container": "victim", "key": "victim", "owner": cluster.ns, "store": store,
            "store_root": store}
    planted = {
        "1" * 32: dict(good, checkpoint="/etc/ckpt-1"),
        "2" * 32: dict(good, checkpoint=f"{store}/{cluster.ns}/victim/ckpt-1",
                       files={"../../../../etc/shadow": 4096}),
        "3" * 32: dict(good, checkpoint=f"{store}/{cluster.ns}/victim/ckpt-1",
                       pad=" " * (2 << 20)),
    }
    for eid, rec in planted.items():
        path = os.path.join(d, eid + ".json")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump(dict(rec, id=eid), f)
    os.symlink("/etc/shadow", os.path.join(d, "4" * 32 + ".json"))
    return [eid + ".json" for eid in planted] + ["4" * 32 + ".json"]


@pytest.mark.parametrize("crash", [False, True], ids=["sigterm", "sigkill"])
def test_source_archd_restarted_during_post_copy_keeps_the_container(cluster, crash):
    """The source's archd restarts (an upgrade, a crash) while b still fetches pages: it
    serves its persisted export again, b's page server reconnects and the container runs on,
    memory intact; once every page has moved the source's generation and export go."""
    a, b = cluster.a, cluster.b
    hostile = plant_hostile_exports(a, cluster)
    try:
        for _ in range(3):
            cid, uuid0, progress = restart_source_during_post_copy(cluster, crash, hostile)
            if progress is not None and progress[0] < progress[1]:
                break
            # Every page had moved before archd stopped: not the case under test; again.
            b.ctr("task", "kill", "-s", "SIGKILL", cid)
            b.delete(cid)
        else:
            pytest.skip("post-copy finished before the source's archd stopped, three times")
        print(f"\nsource archd {'killed' if crash else 'stopped'} with {progress[0]} of "
              f"{progress[1]} chunks sent")
        log = a.archd.log_text()
        assert "served again" in log, log
        for name in hostile:
            assert f"{name} ignored" in log, (name, log)
        # b's container never stopped, and its memory is the source's, bit for bit.
        assert b.status(cid) == "RUNNING", b.diagnostics(cid)
        uuid1, values = wait_ledger(b, cid, 3, "/data/ticks.txt")
        assert uuid1 == uuid0, "the job started again on b instead of going on"
        workloads.check_sequence(values, "ticks on b")
        tick, crc = request_sum(b, cid, len(values))
        activity = checkpoint.read_text(os.path.join(b.conf.state, "activity.jsonl"), 6000)
        assert crc == workloads.expected_memory_crc(tick, 256), (
            f"memory after the restart does not match the pattern at tick {tick}\n{activity}\n"
            f"{b.diagnostics(cid)}\n{a.archd.log_text()}")
        # Post-copy over: the source's generation, container and export go.
        try:
            proc.wait_until(lambda: export_records(a) == sorted(hostile), 120,
                            "the source's export to be finished")
        except proc.WaitTimeout as e:
            left = [(n, export_progress(a, n)) for n in export_records(a) if n not in hostile]
            raise AssertionError(f"{e}: {left}\n{a.archd.log_text()}\n{b.diagnostics(cid)}")
        assert committed(a, cluster, cid) == [], "the source kept its migration generation"
        proc.wait_until(lambda: gone_from(a, cid), 30, "the source's container to be removed")
        assert "is over" in a.archd.log_text(), a.archd.log_text()
        assert b.status(cid) == "RUNNING", b.diagnostics(cid)
        b.ctr("task", "kill", "-s", "SIGKILL", cid)
        b.delete(cid)
    finally:
        for name in hostile:
            try:
                os.unlink(os.path.join(exports_dir(a), name))
            except FileNotFoundError:
                pass


def kill_source_during_post_copy(cluster, mib=256):
    """Migrates a memory job a → b and SIGKILLs a's archd as soon as b runs it. Returns
    (cid, uuid at the start, whether the migration had finished before the kill)."""
    a, b = cluster.a, cluster.b
    # As soon as b runs it (its pages still coming), the source's archd dies.
    cid, uuid0, mig = migration_under_way(cluster, "mig-kill", mib)
    try:
        a.archd.proc.send_signal(signal.SIGKILL)
        a.archd.proc.wait(10)
        mig.communicate(timeout=60)
    finally:
        if mig.poll() is None:
            mig.kill()
            mig.wait()
    # Killed by its page server (fails closed), or still running because every page had
    # moved before the kill landed (the race this test cannot always win). The page server
    # first waits for the source to come back: 2 × [peers] timeout (10 s here).
    try:
        proc.wait_until(lambda: b.status(cid) != "RUNNING", 20 + 2 * 10,
                        f"{cid} on b to be killed")
        return cid, uuid0, False
    except proc.WaitTimeout:
        return cid, uuid0, True


def test_source_killed_during_post_copy_fails_closed_then_falls_back(cluster):
    """Last in the file: it kills node a's archd (restarted at the end)."""
    a, b = cluster.a, cluster.b
    for _ in range(3):
        cid, uuid0, finished = kill_source_during_post_copy(cluster)
        if not finished:
            break
        # Every page had moved before the kill landed: not the case under test; again.
        b.ctr("task", "kill", "-s", "SIGKILL", cid)
        b.delete(cid)
        a.archd.start()
    else:
        pytest.skip("post-copy finished before the source could be killed, three times")
    try:
        check_failed_closed_then_fresh(cluster, cid, uuid0)
    finally:
        a.archd.start()


def check_failed_closed_then_fresh(cluster, cid, uuid0):
    b = cluster.b
    # b's page server cannot fetch the rest: the container is killed, never run on zeros.
    proc.wait_until(lambda: b.status(cid) != "RUNNING", 60,
                    f"{cid} on b to be killed by its page server")
    activity = checkpoint.read_text(os.path.join(b.conf.state, "activity.jsonl"), 20000)
    assert "receive from a" in activity and "the container was killed" in activity, (
        activity[-3000:])
    # A later create on b: the migrated generation cannot be restored (its source is gone),
    # so it is moved aside and, with no other generation there, the job starts fresh.
    b.ctr("task", "delete", cid)
    r = b.ctr("task", "start", "-d", cid, timeout=120)
    assert r.returncode == 0, r.stderr + b.diagnostics(cid)
    # The fresh start writes its own start line: at the top of a clean file, or after the
    # migrated ledger when the page server set the generation aside already (main's 3e45103:
    # the restart then is a plain create on the rootfs the failed restore had laid out).
    def started_again():
        u, values = ledger(b, cid, "/data/ticks.txt")
        if u != uuid0:
            return u
        starts = [v for v in values if isinstance(v, str) and v.startswith("start ")]
        return starts[-1].split(" ", 1)[1] if starts else None
    try:
        uuid1 = proc.wait_until(started_again, 60, f"{cid} to start again on b", interval=0.05)
    except proc.WaitTimeout:
        uuid1 = uuid0
    assert uuid1 != uuid0, "the job resumed on b from pages it could not have had"
    d = os.path.join(b.conf.store, cluster.ns, cid)
    assert any(n.startswith("failed-") for n in os.listdir(d)), os.listdir(d)
    b.ctr("task", "kill", "-s", "SIGKILL", cid)
    b.delete(cid)
