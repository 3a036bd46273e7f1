"""Handoff migration (issue 16, orchestrated containers): `archctl container migrate NS/ID
--to NODE [--handoff]` leaves a full sealed generation on the destination for the
orchestrator's reschedule instead of re-creating the container.

Two nodes (archtest/twonode.py, no shared file system, as in test_migrate.py). An AWS Batch
style job (ARCH_ENABLE=1, AWS_BATCH_JOB_ID=<uuid>: the key is the Batch job id) on
containerd is a ledger (a counter appending 1, 2, 3 ... to a file):
- migrated A → B, handoff chosen by itself (a Batch job is orchestrated): A's container
  exits 137 (as after a finalize) but stays in containerd (the orchestrator's), A keeps no
  generation, B holds one plain generation (no extra.migration, pages images included);
- a container of ANOTHER Batch job started on B starts fresh (the migrated state is not its);
- A's archd is killed, then the "orchestrator" (the test) starts a NEW container on B with
  the job's environment: it resumes the ledger, same start line, no gap, no repeat.
The destination failing after the source froze (it cannot store the key) leaves the source
running, thawed, its ledger intact, nothing committed on either node.
A 32 MiB memory job handed off checks bit for bit in the rescheduled container.
Attacks: a handoff offer whose checkpoint's owner/key differ from what the offered spec
gives is refused; a flipped byte in a pages image is refused before anything is committed
(both spoken by a raw peer holding node a's certificate: the channel itself is tested in
test_migrate.py).
"""

import json
import os
import signal
import socket
import ssl
import struct
import uuid

import pytest

from archtest import checkpoint, proc, twonode, workloads
from conftest import (archd_path, archctl_path, arch_runc_path, criu_path,
                      skip_unless_binaries, skip_unless_root)
from test_migrate import gone_from, read_frame, request_sum, wait_ledger


@pytest.fixture(scope="module")
def cluster(e2e_dir, workload_image, archctl_cli):
    skip_unless_root()
    skip_unless_binaries(archd_path(), twonode.NSENTER, twonode.UNSHARE)
    binaries = twonode.Binaries(arch_runc_path(), archctl_path(), archd_path(), criu_path())
    with twonode.peer_cluster(os.path.join(e2e_dir, "handoff"), binaries, workload_image.name,
                              workload_image.oci) as c:
        yield c


def generations(node, cluster, key):
    d = os.path.join(node.conf.store, cluster.ns, key)
    try:
        return sorted(n for n in os.listdir(d) if n.startswith("ckpt-"))
    except FileNotFoundError:
        return []


def leftovers(node, cluster, key):
    """Anything but committed generations and the lock in the key's directory."""
    d = os.path.join(node.conf.store, cluster.ns, key)
    try:
        return sorted(n for n in os.listdir(d) if not n.startswith("ckpt-") and
                      not n.startswith("."))
    except FileNotFoundError:
        return []


def manifest_of(node, cluster, key, name):
    with open(os.path.join(node.conf.store, cluster.ns, key, name, "manifest.json")) as f:
        return f.read()


def test_batch_job_handed_off_resumes_in_a_new_container_without_the_source(cluster):
    a, b = cluster.a, cluster.b
    job = str(uuid.uuid4())
    env = [f"AWS_BATCH_JOB_ID={job}"]
    argv = workloads.counter("/data/count.txt", ms=20)
    cid = checkpoint.new_id("ho-batch")
    a.start_container(cid, argv, env=env)
    uuid0, before = wait_ledger(a, cid, 5)
    # No --handoff: a Batch job is orchestrated, so the mode is chosen by itself.
    r = a.archctl("container", "migrate", f"{cluster.ns}/{cid}", "--to", "b", "-o", "json",
                  timeout=300)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{a.diagnostics(cid)}"
    report = json.loads(r.stdout)
    print(f"\nhandoff {cid} a → b: total {report['ms']['total']:.0f} ms, frozen "
          f"{report['ms']['frozen']:.0f} ms, bytes {report['bytes']}")
    assert (report["phase"], report["mode"], report["orchestrator"]) == (
        "done", "handoff", "aws-batch"), report
    assert "downtime" not in report["ms"], report
    # A full copy: every page went in the stream.
    assert report["bytes"]["pages"] > 0, report
    assert report["bytes"]["transfer"] == report["bytes"]["checkpoint"], report
    # The source's container ended as after a finalize, and is still the orchestrator's.
    a.wait_status(cid, "STOPPED")
    assert not gone_from(a, cid), "the source removed the orchestrator's container"
    assert a.delete(cid) == 137
    assert generations(a, cluster, job) == [], "the source kept its generation"
    # Nothing was created on b; one plain generation waits there.
    assert gone_from(b, cid)
    kept = generations(b, cluster, job)
    assert len(kept) == 1, kept
    manifest = json.loads(manifest_of(b, cluster, job, kept[0]))
    assert "migration" not in (manifest.get("extra") or {}), manifest.get("extra")
    pages = [f for f in manifest["files"] if f["path"].startswith("images/pages-")]
    assert pages
    for f in pages:  # real bytes, not a sparse placeholder served from elsewhere
        path = os.path.join(b.conf.store, cluster.ns, job, kept[0], f["path"])
        assert os.stat(path).st_blocks * 512 >= f["size"] // 2, (f, os.stat(path))
    # Another Batch job rescheduled on b starts fresh: the migrated state is not its.
    other = checkpoint.new_id("ho-other")
    b.start_container(other, argv, env=[f"AWS_BATCH_JOB_ID={uuid.uuid4()}"])
    uuid_other, values = wait_ledger(b, other, 3)
    assert uuid_other != uuid0, "another job got the migrated ledger"
    assert values[0] == 1, values
    b.ctr("task", "kill", "-s", "SIGKILL", other)
    b.delete(other)
    assert generations(b, cluster, job) == kept
    # The source goes away; the orchestrator reschedules the job (a new container) on b.
    a.archd.proc.send_signal(signal.SIGKILL)
    a.archd.proc.wait(10)
    try:
        again = checkpoint.new_id("ho-batch-b")
        b.start_container(again, argv, env=env)
        uuid1, values = wait_ledger(b, again, len(before) + 5)
        assert uuid1 == uuid0, "the job started again on b instead of going on"
        workloads.check_sequence(values, "ledger after the reschedule on b")
        b.ctr("task", "kill", "-s", "SIGKILL", again)
        b.delete(again)
    finally:
        a.archd.start()
    # The activity and event logs name the handoff.
    activity = checkpoint.read_text(os.path.join(a.conf.state, "activity.jsonl"), 20000)
    assert "handed off to b" in activity, activity[-2000:]


def test_handoff_asked_for_a_container_in_a_network_namespace_joined_by_path(cluster):
    """--handoff for a container that is not orchestrated (an ARCH_JOB_ID key) and that joins
    its node's network namespace by path, as a pod's containers join their sandbox's: the
    reschedule joins the destination's namespace and the restore lands there."""
    a, b = cluster.a, cluster.b
    cid = checkpoint.new_id("ho-netns")
    argv = workloads.counter("/data/count.txt", ms=20)
    a.start_container(cid, argv, env=[f"ARCH_JOB_ID={cid}"], node_network=True)
    uuid0, before = wait_ledger(a, cid, 5)
    r = a.archctl("container", "migrate", f"{cluster.ns}/{cid}", "--to", "b", "--handoff",
                  timeout=300)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{a.diagnostics(cid)}"
    assert "(handoff)" in r.stdout and "frozen" in r.stdout, r.stdout
    assert a.delete(cid) == 137
    assert generations(a, cluster, cid) == [] and len(generations(b, cluster, cid)) == 1
    again = checkpoint.new_id("ho-netns-b")
    b.start_container(again, argv, env=[f"ARCH_JOB_ID={cid}"], node_network=True)
    uuid1, values = wait_ledger(b, again, len(before) + 5)
    assert uuid1 == uuid0, "the job started again on b instead of going on"
    workloads.check_sequence(values, "ledger in b's network namespace")
    b.ctr("task", "kill", "-s", "SIGKILL", again)
    b.delete(again)


def test_memory_handed_off_checks_bit_for_bit_after_the_reschedule(cluster):
    a, b = cluster.a, cluster.b
    mib = 32
    job = str(uuid.uuid4())
    argv = workloads.memory("/data/ticks.txt", "/data/sums.txt", mib=mib)
    cid = checkpoint.new_id("ho-mem")
    a.start_container(cid, argv, env=[f"AWS_BATCH_JOB_ID={job}"])
    wait_ledger(a, cid, 3, "/data/ticks.txt")
    r = a.archctl("container", "migrate", f"{cluster.ns}/{cid}", "--to", "b", "-o", "json",
                  timeout=300)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{a.diagnostics(cid)}"
    report = json.loads(r.stdout)
    assert report["bytes"]["transfer"] >= report["bytes"]["pages"] >= mib << 20, report
    assert a.delete(cid) == 137
    again = checkpoint.new_id("ho-mem-b")
    b.start_container(again, argv, env=[f"AWS_BATCH_JOB_ID={job}"])
    _, values = wait_ledger(b, again, 3, "/data/ticks.txt")
    workloads.check_sequence(values, "ticks after the reschedule")
    tick, crc = request_sum(b, again, len(values))
    assert crc == workloads.expected_memory_crc(tick, mib), (
        f"memory after the handoff does not match the pattern at tick {tick}")
    b.ctr("task", "kill", "-s", "SIGKILL", again)
    b.delete(again)


def test_destination_failing_after_the_freeze_leaves_the_source_running(cluster):
    """b cannot store the key (a plain file where its directory goes): the refusal comes
    after a's freeze and dump; a thaws, the ledger goes on, nothing is committed anywhere."""
    a, b = cluster.a, cluster.b
    job = str(uuid.uuid4())
    cid = checkpoint.new_id("ho-refused")
    a.start_container(cid, workloads.counter("/data/count.txt", ms=20),
                      env=[f"AWS_BATCH_JOB_ID={job}"])
    uuid0, before = wait_ledger(a, cid, 5)
    blocker = os.path.join(b.conf.store, cluster.ns, job)
    os.makedirs(os.path.dirname(blocker), mode=0o700, exist_ok=True)
    with open(blocker, "w") as f:
        f.write("not a directory\n")
    try:
        r = a.archctl("container", "migrate", f"{cluster.ns}/{cid}", "--to", "b", timeout=300)
        assert r.returncode != 0, r.stdout
        assert "thawed" in r.stderr and "runs on here" in r.stderr, r.stderr
    finally:
        os.unlink(blocker)
    assert a.status(cid) == "RUNNING"
    uuid1, values = wait_ledger(a, cid, len(before) + 5)
    assert uuid1 == uuid0
    workloads.check_sequence(values, "ledger on a after the refused handoff")
    assert generations(a, cluster, job) == [] and generations(b, cluster, job) == []
    a.ctr("task", "kill", "-s", "SIGKILL", cid)
    a.delete(cid)


# ------------------------------------------------------------------ attacks: a raw peer

def frame(kind, body):
    return struct.pack(">BI", kind, len(body)) + body


def as_node_a(cluster, talk):
    """A TLS connection from node a's network namespace to node b's peer listener with a's
    own certificate (the one the source archd uses); returns talk(tls)."""
    peers = os.path.join(cluster.a.base, "peers")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(os.path.join(peers, "node.crt"), os.path.join(peers, "node.key"))

    def attempt():
        with socket.create_connection((cluster.b.address, twonode.PEER_PORT), timeout=30) as raw:
            with ctx.wrap_socket(raw) as tls:
                return talk(tls)
    return twonode.in_netns(cluster.a.holder.netns_path, attempt)


def call(tls, op):
    tls.sendall(frame(1, json.dumps(op).encode()))
    kind, body = read_frame(tls)
    assert kind == 1, (kind, body[:200])
    return json.loads(body)


def handoff_offer(cluster, key):
    return {"op": "migrate.offer", "mode": "handoff", "ns": cluster.ns, "id": "ho-raw",
            "args": ["sh"], "env": ["ARCH_ENABLE=1", f"ARCH_JOB_ID={key}"], "cwd": "/"}


@pytest.fixture
def sealed(cluster):
    """A real sealed generation of key `ho-src-*` on node a (the same node key as b's):
    (key, its directory, its manifest text)."""
    a = cluster.a
    key = checkpoint.new_id("ho-src")
    a.start_container(key, workloads.counter("/data/count.txt", ms=20),
                      env=[f"ARCH_JOB_ID={key}"])
    wait_ledger(a, key, 3)
    r = a.archctl("container", "checkpoint", f"{cluster.ns}/{key}", "--leave-running")
    assert r.returncode == 0, r.stdout + r.stderr
    name = generations(a, cluster, key)[-1]
    yield key, os.path.join(a.conf.store, cluster.ns, key, name), manifest_of(a, cluster, key,
                                                                              name)
    a.ctr("task", "kill", "-s", "SIGKILL", key)
    a.delete(key)


def test_handoff_of_a_checkpoint_of_another_key_is_refused(cluster, sealed):
    key, _, manifest = sealed
    other = checkpoint.new_id("ho-victim")

    def talk(tls):
        assert call(tls, handoff_offer(cluster, other)) == {"ok": True}
        return call(tls, {"op": "migrate.checkpoint", "manifest": manifest})
    answer = as_node_a(cluster, talk)
    assert "the checkpoint is of" in answer.get("error", ""), answer
    assert generations(cluster.b, cluster, other) == []
    assert generations(cluster.b, cluster, key) == []


def test_handoff_with_a_flipped_byte_in_a_pages_image_is_refused_before_commit(cluster, sealed):
    key, directory, manifest = sealed
    files = json.loads(manifest)["files"]
    pages = next(f["path"] for f in files if f["path"].startswith("images/pages-") and
                 f["size"] > 0)

    def talk(tls):
        assert call(tls, handoff_offer(cluster, key)) == {"ok": True}
        tls.sendall(frame(1, json.dumps({"op": "migrate.checkpoint",
                                         "manifest": manifest}).encode()))
        for f in files:
            with open(os.path.join(directory, f["path"]), "rb") as src:
                data = bytearray(src.read())
            if f["path"] == pages:
                data[len(data) // 2] ^= 0x01
            for at in range(0, len(data), 4 << 20):
                tls.sendall(frame(2, bytes(data[at:at + (4 << 20)])))
            tls.sendall(frame(2, b""))
            if f["path"] == pages:
                break  # the destination answers once it has hashed this file
        kind, body = read_frame(tls)
        assert kind == 1, (kind, body[:200])
        return json.loads(body)
    answer = as_node_a(cluster, talk)
    assert "does not match the sealed manifest" in answer.get("error", ""), answer
    assert pages in answer["error"], answer
    b = cluster.b
    assert generations(b, cluster, key) == []
    proc.wait_until(lambda: leftovers(b, cluster, key) == [], 10,
                    f"the staging of {key} on b to be removed")
