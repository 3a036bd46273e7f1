"""Groups across nodes (issue 15) over the authenticated channel between archd instances.

Two nodes on this machine (archtest/twonode.py: each its own network and mount namespace,
containerd and archd), sharing one store directory (a plain directory seen at the same path
by both, no GlusterFS: what is tested here is the channel and the protocol) and one node
key; each archd listens on its node's address ([peers] listen) and knows the other.

- `archctl peer ping` works from a to b and from b to a (mutual TLS, certificates issued
  from the shared node key at archd's start).
- A client on node a and a server on node b, exchanging numbered records over TCP between
  the two node addresses, are checkpointed as one group from node a (the coordinator): one
  sealed group record names both members' generations and their nodes. Both are re-created
  on their nodes and restored from it: the server's records go on 1..N with none lost or
  repeated, and the client is the same process. The restores are synchronised across nodes
  (restore_barrier.h): the client is re-created first and held, restored and stopped with
  its connection blocked, until the server on node b is restored too; then both are
  released together and the TCP connection between the nodes is kept (no reset, no
  reconnect). The frozen time of the two-member cross-node group checkpoint is printed
  (pytest -s).
- `archctl node drain` on node a runs the same protocol for the group (node a
  coordinates): both members in one generation, restored from it as above. Attack: with
  node b unreachable, the drain commits no group generation (none naming node a's member
  alone); the previous one stays the newest. A drain whose deadline comes during the
  group's dumps stops them on both nodes: nothing of that round committed, both thawed.
- A member whose dump fails (io_uring, on node b) fails the whole group: the member on
  node a is thawed too, both keep running, no generation and no group record committed.
- Members restore on swapped nodes (a's on b, b's on a): they wait for each other across
  nodes, whichever node they are on, and restore from the group generation.
- A member whose restore fails (its port taken on node b) stops the group's restore: the
  member held at the release on node a is not let run (group_member_failure = stop).
- Attack: a container of another owner on node b naming the same group is never asked for,
  frozen or checkpointed.
- Attack: a third "node" whose certificate comes from another key (and claims to be b)
  cannot ping node a, and its group.freeze request never freezes anything: the TLS
  handshake refuses it both ways.
"""

import json
import os
import re
import secrets
import socket
import ssl
import struct
import subprocess
import sys
import threading

import pytest

from archtest import checkpoint, daemons, proc, twonode, workloads
from conftest import (archd_path, archctl_path, arch_runc_path, criu_path,
                      skip_unless_binaries, skip_unless_root)

WORKDIR = "/work"
SERVER_PORT = 9000


@pytest.fixture(scope="module")
def cluster(e2e_dir, workload_image, archctl_cli):
    skip_unless_root()
    skip_unless_binaries(archd_path(), twonode.NSENTER, twonode.UNSHARE)
    binaries = twonode.Binaries(arch_runc_path(), archctl_path(), archd_path(), criu_path())
    with twonode.peer_cluster(os.path.join(e2e_dir, "peer-groups"), binaries,
                              workload_image.name, workload_image.oci) as c:
        yield c


def env_for(cluster, job, group):
    return [f"ARCH_SHAREDFS_HOST_PATH={cluster.shared}",
            f"ARCH_WORKDIR_CONTAINER_PATH={WORKDIR}", f"ARCH_JOB_ID={job}",
            f"ARCH_GROUP={group}", "ARCH_TCP=restore"]


def group_checkpoint(node, group, ok=True):
    r = node.archctl("group", "checkpoint", group, "-o", "json", timeout=180)
    if ok:
        assert r.returncode == 0, (f"group checkpoint: {r.stdout}\n{r.stderr}\n"
                                   f"{node.diagnostics()}")
        return json.loads(r.stdout)
    assert r.returncode != 0, r.stdout
    return r.stdout + r.stderr


def records(node, cid):
    text = node.read(cid, "/data/server.log") or ""
    return [int(x) for x in workloads.complete_lines(text)]


def wait_records(node, cid, minimum, timeout=40):
    return proc.wait_until(lambda: len(records(node, cid)) >= minimum and records(node, cid),
                           timeout, f"{cid} to hold {minimum} records", interval=0.1)


def count_lines(node, cid, path="/data/count.txt"):
    return len(workloads.complete_lines(node.read(cid, path) or ""))


def test_peers_ping_each_other(cluster):
    for here, there in ((cluster.a, "b"), (cluster.b, "a")):
        out = here.archctl_json("peer", "ping", there)
        assert out["node"] == there and out["peer"] == here.name, out
        print(f"\npeer ping {here.name} -> {there}: {out['rtt_ms']:.1f} ms")
    listed = cluster.a.archctl_json("peer", "list")
    assert listed["node"] == "a" and [p["reachable"] for p in listed["peers"]] == [True], listed


def test_a_group_across_two_nodes_keeps_its_records(cluster):
    a, b = cluster.a, cluster.b
    group = "pg" + secrets.token_hex(3)
    srv, cli = checkpoint.new_id("psrv"), checkpoint.new_id("pcli")
    srv_job, cli_job = f"{group}-srv", f"{group}-cli"
    server = [workloads.IN_IMAGE, "tcpserver", str(SERVER_PORT), "/data/server.log"]
    client = [workloads.IN_IMAGE, "tcpclient", b.address, str(SERVER_PORT),
              "/data/client.log", "20"]
    b.start_container(srv, server, env_for(cluster, srv_job, group), node_network=True)
    a.start_container(cli, client, env_for(cluster, cli_job, group), node_network=True)
    wait_records(b, srv, 20)
    held = len(records(b, srv))  # at least these are in the checkpoint

    out = group_checkpoint(a, group)
    print(f"\ncross-node two-member group checkpoint: frozen {out['frozen_ms']:.0f} ms, "
          f"total {out['total_ms']:.0f} ms; " +
          "; ".join(f"{m['node']}: " + " ".join(f"{k}={v:.0f}" for k, v in
                                                 sorted(m["timings_ms"].items()))
                    for m in out["members"]))
    assert sorted(out["nodes"]) == ["a", "b"], out
    assert {(m["node"], m["id"]) for m in out["members"]} == {("a", cli), ("b", srv)}, out
    with open(os.path.join(a.path(out["record"]), "group.json")) as f:
        doc = json.load(f)
    assert doc["generation"] == out["generation"], doc
    assert {(m["key"], m["node"]) for m in doc["members"]} == {(cli_job, "a"), (srv_job, "b")}
    assert cluster.committed(srv_job) and cluster.committed(cli_job)
    assert b.delete(srv) == 137 and a.delete(cli) == 137
    # Re-created on their nodes (as an orchestrator would), the client first.
    restore_pair(cluster, group, (b, srv, server, srv_job), (a, cli, client, cli_job), held)


def drain(node, deadline=60):
    """`archctl node drain --wait` on `node`, then undrain (the node stays usable): the
    drain's record (its report lists each container with its result and notes)."""
    r = node.archctl("node", "drain", "--wait", "--deadline", str(deadline), "-o", "json",
                     timeout=deadline + 60)
    assert r.returncode in (0, 7), (r.stdout, r.stderr)
    undo = node.archctl("node", "undrain")
    assert undo.returncode == 0, undo.stderr
    return json.loads(r.stdout)


def group_records(cluster, group):
    return cluster.committed("arch-group." + group)


def test_a_drain_takes_a_cross_node_group_as_one_unit(cluster):
    """`archctl node drain` on node a, whose group has a member on node b: the drain runs
    the two-phase protocol with node b (node a coordinates), so both members are
    checkpointed in one group generation, and both restore from it (records go on with
    none lost or repeated). Attack/failure first: with node b unreachable (its archd, the
    peer listener, stopped), the drain commits no group generation at all (not one naming
    node a's member alone): the member keeps running and the previous complete generation
    stays the newest, the one a restore uses."""
    a, b = cluster.a, cluster.b
    group = "pd" + secrets.token_hex(3)
    srv, cli = checkpoint.new_id("dsrv"), checkpoint.new_id("dcli")
    srv_job, cli_job = f"{group}-srv", f"{group}-cli"
    server = [workloads.IN_IMAGE, "tcpserver", str(SERVER_PORT + 1), "/data/server.log"]
    client = [workloads.IN_IMAGE, "tcpclient", b.address, str(SERVER_PORT + 1),
              "/data/client.log", "20"]
    b.start_container(srv, server, env_for(cluster, srv_job, group), node_network=True)
    a.start_container(cli, client, env_for(cluster, cli_job, group), node_network=True)
    wait_records(b, srv, 10)
    first = a.archctl_json("group", "checkpoint", group, "--leave-running", timeout=180)
    assert len(group_records(cluster, group)) == 1
    members_before = (cluster.committed(srv_job), cluster.committed(cli_job))

    # 1. Node b unreachable: nothing of the group is committed by a's drain.
    b.archd.stop()
    try:
        d = drain(a, deadline=30)
    finally:
        b.archd.start()
    mine = {x["id"]: x for x in d["report"]["containers"]}
    assert mine[cli]["result"] != "checkpointed", d
    assert group in mine[cli]["detail"] and "not checkpointed" not in mine[cli]["detail"]
    assert group_records(cluster, group) == [first["record"].rsplit("/", 1)[1]]
    assert (cluster.committed(srv_job), cluster.committed(cli_job)) == members_before
    assert a.status(cli) == "RUNNING" and b.status(srv) == "RUNNING"
    held = len(records(b, srv))
    wait_records(b, srv, held + 5)  # thawed on both nodes: the exchange goes on
    print(f"\ndrain with peer b unreachable: {mine[cli]['result']}: {mine[cli]['detail']}")

    # 2. Node b back: the drain checkpoints both members as one generation.
    proc.wait_until(lambda: a.archctl("peer", "ping", "b").returncode == 0, 30,
                    "node b's peer listener to answer again")
    held = len(records(b, srv))
    d = drain(a, deadline=90)
    mine = {x["id"]: x for x in d["report"]["containers"]}
    assert mine[cli]["result"] == "checkpointed", (d, a.diagnostics(cli))
    notes = " ".join(mine[cli]["notes"])
    assert "across nodes a, b" in notes, notes
    frozen = re.search(r"frozen (\d+) ms", notes)
    print(f"cross-node group checkpoint under drain: frozen {frozen.group(1)} ms; "
          f"member on a: {mine[cli]['seconds']:.2f} s; notes: {notes}")
    gens = group_records(cluster, group)
    assert len(gens) == 2, gens
    with open(os.path.join(cluster.checkpoint_dir("arch-group." + group), gens[-1],
                           "group.json")) as f:
        doc = json.load(f)
    assert {(m["key"], m["node"]) for m in doc["members"]} == {(cli_job, "a"), (srv_job, "b")}
    # Both ended by the commit (b's by its archd for coordinator a).
    b.wait_status(srv, "STOPPED", 30)
    a.wait_status(cli, "STOPPED", 30)
    assert b.delete(srv) == 137 and a.delete(cli) == 137
    restore_pair(cluster, group, (b, srv, server, srv_job), (a, cli, client, cli_job), held)


def test_a_drain_whose_deadline_comes_during_the_group_dumps_commits_nothing(cluster):
    """A drain of node a with a deadline shorter than the group's dumps (two members of
    384 MiB, one per node; 2.5 s, less the 1 s margin): the dumps are stopped on both nodes
    at the deadline less the margin, no member generation and no group record of that round
    is committed, and both members are thawed and go on."""
    a, b = cluster.a, cluster.b
    group = "pt" + secrets.token_hex(3)
    xa, xb = checkpoint.new_id("pta"), checkpoint.new_id("ptb")
    a.start_container(xa, workloads.memory(mib=384), env_for(cluster, f"{group}-a", group))
    b.start_container(xb, workloads.memory(mib=384), env_for(cluster, f"{group}-b", group))
    ticks = lambda node, cid: count_lines(node, cid, "/data/ticks.txt")  # noqa: E731
    proc.wait_until(lambda: ticks(a, xa) > 2 and ticks(b, xb) > 2, 60, "both to tick")
    d = drain(a, deadline=2.5)
    mine = {x["id"]: x for x in d["report"]["containers"]}
    assert mine[xa]["result"] in ("failed", "skipped"), d
    assert "deadline" in mine[xa]["detail"], mine[xa]
    # A dump stopped at the deadline says so, not that CRIU failed.
    assert "CRIU could not dump" not in mine[xa]["detail"], mine[xa]
    print(f"\ndrain past its deadline: {mine[xa]['result']}: {mine[xa]['detail'][:300]}")
    assert group_records(cluster, group) == []
    assert cluster.committed(f"{group}-a") == [] and cluster.committed(f"{group}-b") == []
    for node, cid in ((a, xa), (b, xb)):
        assert node.status(cid) == "RUNNING", cid
        before = ticks(node, cid)
        proc.wait_until(lambda: ticks(node, cid) > before + 2, 30,
                        f"{cid} on {node.name} to go on (thawed)")
    a.ctr("task", "kill", "-s", "KILL", xa)
    b.ctr("task", "kill", "-s", "KILL", xb)


def restore_pair(cluster, group, server_side, client_side, held):
    """Both members re-created on their nodes at once; records go on with none lost or
    repeated, the client not restarted. Returns the client's log."""
    (b, srv, server, srv_job), (a, cli, client, cli_job) = server_side, client_side
    errors = []

    def start(node, cid, argv, job):
        try:
            node.start_container(cid, argv, env_for(cluster, job, group), node_network=True)
        except AssertionError as e:
            errors.append(str(e))
    threads = [threading.Thread(target=start, args=(a, cli, client, cli_job)),
               threading.Thread(target=start, args=(b, srv, server, srv_job))]
    threads[0].start()
    # The server is re-created only once the client is restored (and held): unsynchronised,
    # the client would run, send, and meet a reset from node b, where no socket is yet.
    arrivals = cluster.checkpoint_dir("arch-group." + group)
    proc.wait_until(lambda: any(os.path.exists(os.path.join(arrivals, d, cli_job))
                                for d in os.listdir(arrivals) if d.startswith("arrivals.")),
                    60, "the client to be restored and held at the group's release")
    threads[1].start()
    for t in threads:
        t.join()
    assert not errors, errors
    for node, cid in ((a, cli), (b, srv)):
        msgs = node.log_messages(cid)
        assert any("restored from" in m for m in msgs), (msgs, node.diagnostics(cid))
    releases = {}
    for node, cid in ((a, cli), (b, srv)):
        msgs = node.log_messages(cid)
        lines = [x for x in msgs if "group release" in x]
        assert lines, f"no group release logged for {cid} on node {node.name}: {msgs}"
        releases[node.name] = lines[-1].split("group release: ", 1)[1]
    print(f"\nrelease at the end of the restores: {releases}")
    assert all("released together" in r for r in releases.values()), releases
    for node in (a, b):  # the hold on the connections is lifted
        rules = node.run(["iptables", "-w", "5", "-S"], timeout=30)
        assert rules.returncode == 0 and "arch-group" not in rules.stdout, rules.stdout
    after = records(b, srv)
    assert len(after) >= held, (held, after[-3:])  # restored, not started afresh
    values = wait_records(b, srv, len(after) + 30)
    assert values == list(range(1, len(values) + 1)), (
        "records lost or repeated across the cross-node group checkpoint: " +
        str([(i + 1, v) for i, v in enumerate(values) if v != i + 1][:5]))
    log = workloads.complete_lines(a.read(cli, "/data/client.log") or "")
    assert sum(1 for x in log if x.startswith("start ")) == 1, log  # restored, not restarted
    print(f"server records {len(values)} (held {held} before the checkpoint); client log "
          f"after restore: {log.count('connect')} connect(s), "
          f"{[x for x in log if x.startswith('lost ')]}")
    # Released together: the TCP connection between the nodes is kept (no reset, no reconnect).
    assert log.count("connect") == 1 and not [x for x in log if x.startswith("lost ")], log
    b.ctr("task", "kill", "-s", "KILL", srv)
    a.ctr("task", "kill", "-s", "KILL", cli)
    return log


def test_members_restore_on_swapped_nodes(cluster):
    """The member checkpointed on node a is re-created on node b and the one of node b on
    node a: each waits for the other across nodes (markers in the shared store, not per
    node) and both restore from the group generation, counting on from where they were."""
    a, b = cluster.a, cluster.b
    group = "ps" + secrets.token_hex(3)
    xa, xb = checkpoint.new_id("psa"), checkpoint.new_id("psb")
    env_a, env_b = env_for(cluster, f"{group}-a", group), env_for(cluster, f"{group}-b", group)
    a.start_container(xa, workloads.counter(), env_a)
    b.start_container(xb, workloads.counter(), env_b)
    proc.wait_until(lambda: count_lines(a, xa) > 3 and count_lines(b, xb) > 3, 30, "both count")
    held = {"a": count_lines(a, xa), "b": count_lines(b, xb)}  # at least these are kept
    group_checkpoint(a, group)
    assert a.delete(xa) == 137 and b.delete(xb) == 137
    errors = []

    def start(node, cid, env):
        try:
            node.start_container(cid, workloads.counter(), env)
        except AssertionError as e:
            errors.append(str(e))
    threads = [threading.Thread(target=start, args=(b, xa, env_a)),
               threading.Thread(target=start, args=(a, xb, env_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for node, cid, was in ((b, xa, "a"), (a, xb, "b")):
        msgs = node.log_messages(cid)
        assert any("restored from" in m for m in msgs), (msgs, node.diagnostics(cid))
        lines = workloads.complete_lines(node.read(cid, "/data/count.txt") or "")
        assert held[was] > 3 and len(lines) >= held[was], (was, held, lines[-3:])
        print(f"\nmember of node {was} restored on node {node.name}: {len(lines)} lines "
              f"(held {held[was]})")
    b.ctr("task", "kill", "-s", "KILL", xa)
    a.ctr("task", "kill", "-s", "KILL", xb)


def test_a_member_failing_to_restore_stops_the_group(cluster):
    """Node b's server cannot be restored (its port is taken on node b when it comes back):
    its restore fails, and the client on node a, restored and held at the release, is not
    let run: its restore fails too, its tasks killed before they ran ([restore]
    group_member_failure = stop), and both follow on_failure (fresh): the group restarts
    together instead of half of it going on from the checkpoint."""
    a, b = cluster.a, cluster.b
    group = "pr" + secrets.token_hex(3)
    port = SERVER_PORT + 2
    srv, cli = checkpoint.new_id("rsrv"), checkpoint.new_id("rcli")
    srv_job, cli_job = f"{group}-srv", f"{group}-cli"
    server = [workloads.IN_IMAGE, "tcpserver", str(port), "/data/server.log"]
    client = [workloads.IN_IMAGE, "tcpclient", b.address, str(port), "/data/client.log", "20"]
    b.start_container(srv, server, env_for(cluster, srv_job, group), node_network=True)
    a.start_container(cli, client, env_for(cluster, cli_job, group), node_network=True)
    wait_records(b, srv, 10)
    group_checkpoint(a, group)
    assert b.delete(srv) == 137 and a.delete(cli) == 137
    squatter = b.popen([sys.executable, "-c",
                        "import socket, time; s = socket.socket(); "
                        f"s.bind(('0.0.0.0', {port})); s.listen(); print('ok', flush=True); "
                        "time.sleep(300)"], stdout=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout.readline().strip() == "ok"
        threads = [threading.Thread(target=node.start_container,
                                    args=(cid, argv, env_for(cluster, job, group)),
                                    kwargs={"check": False, "node_network": True})
                   for node, cid, argv, job in ((a, cli, client, cli_job),
                                                (b, srv, server, srv_job))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        msgs_a, msgs_b = a.log_messages(cli), b.log_messages(srv)
        assert not any("restored from" in m for m in msgs_b), msgs_b
        assert any("killed before they ran" in m and srv_job in m for m in msgs_a), msgs_a
        assert not any("restored from" in m for m in msgs_a), msgs_a
        print("\nmember restore failure: " +
              next(m for m in msgs_a if "killed before they ran" in m)[:400])
    finally:
        squatter.kill()
        squatter.wait(10)
        for node, cid in ((a, cli), (b, srv)):
            node.ctr("task", "kill", "-s", "KILL", cid)


def test_a_member_failing_on_one_node_fails_the_group_everywhere(cluster):
    a, b = cluster.a, cluster.b
    group = "pf" + secrets.token_hex(3)
    good, bad = checkpoint.new_id("pok"), checkpoint.new_id("pbad")
    good_job, bad_job = f"{group}-ok", f"{group}-bad"
    a.start_container(good, workloads.counter(), env_for(cluster, good_job, group))
    b.start_container(bad, [workloads.IN_IMAGE, "iouring", "/data/count.txt"],
                      env_for(cluster, bad_job, group))
    proc.wait_until(lambda: count_lines(b, bad) > 2, 20, "the io_uring holder to count")
    err = group_checkpoint(a, group, ok=False)
    assert "every member thawed and still running" in err and bad in err, err
    for node, cid in ((a, good), (b, bad)):
        assert node.status(cid) == "RUNNING", cid
        before = count_lines(node, cid)
        proc.wait_until(lambda: count_lines(node, cid) > before + 3, 20,
                        f"{cid} on {node.name} to go on counting (thawed)")
    assert cluster.committed(good_job) == [] and cluster.committed(bad_job) == []
    assert cluster.committed("arch-group." + group) == []
    # The abort is in node b's activity log as the coordinator's.
    a.ctr("task", "kill", "-s", "KILL", good)
    b.ctr("task", "kill", "-s", "KILL", bad)


def foreign_identity(directory, name):
    """A CA of another key and a certificate for `name` from it (openssl)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    p = lambda n: os.path.join(directory, n)  # noqa: E731
    run = lambda *a: proc.run(["openssl", *a], check=True, timeout=30)  # noqa: E731
    run("genpkey", "-algorithm", "ed25519", "-out", p("ca.key"))
    run("req", "-x509", "-new", "-key", p("ca.key"), "-subj", "/CN=arch peer CA evil",
        "-days", "2", "-out", p("ca.crt"))
    run("genpkey", "-algorithm", "ed25519", "-out", p("node.key"))
    run("req", "-new", "-key", p("node.key"), "-subj", f"/CN={name}", "-out", p("node.csr"))
    with open(p("ext"), "w") as f:
        f.write(f"subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth,clientAuth\n")
    run("x509", "-req", "-in", p("node.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"),
        "-CAcreateserial", "-days", "1", "-extfile", p("ext"), "-out", p("node.crt"))
    return p("node.crt"), p("node.key")


def test_a_node_with_another_key_can_neither_ping_nor_freeze(cluster, e2e_dir):
    a, b = cluster.a, cluster.b
    group = "px" + secrets.token_hex(3)
    victim, job = checkpoint.new_id("pvic"), f"{group}-v"
    a.start_container(victim, workloads.counter(), env_for(cluster, job, group))
    base = os.path.join(e2e_dir, "intruder-" + secrets.token_hex(3))
    # 1. archctl with its own node key (another cluster's), claiming to be node b.
    keys, _ = daemons.make_key_dir(os.path.join(base, "keys"))
    conf = os.path.join(base, "arch.conf")
    with open(b.config) as f:
        text = f.read().split("[peers]")[0]
    assert f"dir = {cluster.keys}\n" in text
    text = text.replace(f"dir = {cluster.keys}\n", f"dir = {keys}\n")
    text += (f"[peers]\ndir = {os.path.join(base, 'peers')}\nnode_name = b\n"
             f"nodes = a={a.address}:{twonode.PEER_PORT}\ntimeout = 10\n")
    with open(conf, "w") as f:
        f.write(text)
    os.chmod(conf, 0o644)
    r = b.holder.run([cluster.bin.archctl, "peer", "ping", "a"], timeout=60,
                     env=dict(os.environ, ARCH_CONFIG=conf))
    assert r.returncode != 0 and "refused" in r.stderr, (r.stdout, r.stderr)
    # 2. A raw TLS client with a foreign certificate for "b", trusting anything (so only the
    # server's check stands between it and node a), sends group.freeze for the group.
    crt, key = foreign_identity(os.path.join(base, "raw"), "b")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(crt, key)
    request = json.dumps({"op": "group.freeze", "owner": cluster.ns, "group": group,
                          "generation": "0" * 32, "keys": [job]}).encode()

    def attempt():
        with socket.create_connection((a.address, twonode.PEER_PORT), timeout=10) as raw:
            try:
                with ctx.wrap_socket(raw) as tls:
                    tls.sendall(struct.pack(">BI", 1, len(request)) + request)
                    data = tls.recv(4096)
                    return ("answered", data)
            except (ssl.SSLError, OSError) as e:
                return ("refused", str(e))
    outcome, detail = twonode.in_netns(b.holder.netns_path, attempt)
    assert outcome == "refused" or detail == b"", (outcome, detail)
    proc.wait_until(lambda: "peer connection refused" in a.archd.log_text(), 10,
                    "node a's archd to log the refused peer")
    before = count_lines(a, victim)
    proc.wait_until(lambda: count_lines(a, victim) > before + 3, 20,
                    "the group's member on node a to go on counting (never frozen)")
    assert cluster.committed(job) == []
    a.ctr("task", "kill", "-s", "KILL", victim)


def test_a_peer_acts_only_for_the_owner_named(cluster):
    """Attack: a container of another owner (containerd namespace) on node b names the same
    group: node a's group checkpoint asks node b for the group of its own owner, and node b
    never freezes or checkpoints the foreign container."""
    a, b = cluster.a, cluster.b
    group = "po" + secrets.token_hex(3)
    other_ns = cluster.ns + "-other"
    mine_a, mine_b = checkpoint.new_id("poa"), checkpoint.new_id("pob")
    foreign = checkpoint.new_id("pofor")
    a.start_container(mine_a, workloads.counter(), env_for(cluster, f"{group}-a", group))
    b.start_container(mine_b, workloads.counter(), env_for(cluster, f"{group}-b", group))
    ctr = lambda *args, timeout=120: b.run(  # noqa: E731
        b.ctd.ctr_argv(*args, ns=other_ns), timeout=timeout)
    assert ctr("images", "import", cluster.image_archive).returncode == 0
    r = ctr("run", "-d", "--runc-root", b.runc_root, "--runc-binary", cluster.bin.arch_runc,
            "--env", "ARCH_ENABLE=1", *sum((["--env", e] for e in
                                             env_for(cluster, f"{group}-a", group)), []),
            cluster.image, foreign, *workloads.counter())
    assert r.returncode == 0, r.stderr
    try:
        proc.wait_until(lambda: ctr("task", "ls").stdout.count("RUNNING") >= 1, 30,
                        "the foreign container to run")
        out = cluster.a.archctl_json("group", "checkpoint", group, "--leave-running")
        assert {(m["node"], m["id"]) for m in out["members"]} == {("a", mine_a), ("b", mine_b)}
        assert cluster.committed(f"{group}-a", ns=other_ns) == []  # same job id, other owner
        with open(os.path.join(a.path(out["record"]), "group.json")) as f:
            assert {m["key"] for m in json.load(f)["members"]} == {f"{group}-a", f"{group}-b"}
        # Every container goes on (leave-running), the foreign one never paused.
        for node, cid in ((a, mine_a), (b, mine_b)):
            before = count_lines(node, cid)
            proc.wait_until(lambda: count_lines(node, cid) > before + 3, 20, f"{cid} to count")
        foreign_count = lambda: len(workloads.complete_lines(  # noqa: E731
            ctr("task", "exec", "--exec-id", "x" + secrets.token_hex(3), foreign, "cat",
                "/data/count.txt").stdout))
        before = foreign_count()
        proc.wait_until(lambda: foreign_count() > before + 3, 20, "the foreign container")
        activity = os.path.join(b.conf.state, "activity.jsonl")
        with open(activity) as f:
            text = f.read()
        assert mine_b in text and foreign not in text, text[-2000:]
    finally:
        ctr("task", "kill", "-s", "KILL", foreign)
        proc.wait_until(lambda: "RUNNING" not in ctr("task", "ls").stdout, 30, "foreign gone")
        ctr("task", "delete", foreign)
        ctr("containers", "rm", foreign)
        daemons.remove_cgroup_parent(other_ns)
        a.ctr("task", "kill", "-s", "KILL", mine_a)
        b.ctr("task", "kill", "-s", "KILL", mine_b)


def test_a_lost_coordinator_leaves_every_member_running(cluster):
    """The coordinator (archctl on node a) is killed once node b has frozen its member: node b
    sees the connection end, finds no group record in the store and aborts (thaws); node a's
    member is thawed by its guard. Nothing is committed for the group."""
    a, b = cluster.a, cluster.b
    group = "pl" + secrets.token_hex(3)
    xa, xb = checkpoint.new_id("pla"), checkpoint.new_id("plb")
    a.start_container(xa, workloads.memory(mib=256), env_for(cluster, f"{group}-a", group))
    b.start_container(xb, workloads.memory(mib=256), env_for(cluster, f"{group}-b", group))
    ticks = lambda node, cid: count_lines(node, cid, "/data/ticks.txt")  # noqa: E731
    proc.wait_until(lambda: ticks(a, xa) > 2 and ticks(b, xb) > 2, 30, "both to tick")
    mark = len(b.archd.log_text())
    coordinator = a.popen([cluster.bin.archctl, "group", "checkpoint", group],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait_until(lambda: "frozen for coordinator a" in b.archd.log_text()[mark:], 30,
                        "node b to freeze its member", interval=0.02)
    finally:
        coordinator.kill()
        coordinator.wait(10)
    proc.wait_until(lambda: "aborted, members thawed" in b.archd.log_text()[mark:], 60,
                    "node b to abort on its own")
    for node, cid in ((a, xa), (b, xb)):
        before = ticks(node, cid)
        proc.wait_until(lambda: ticks(node, cid) > before + 3, 30,
                        f"{cid} on {node.name} to go on (thawed)")
    assert cluster.committed("arch-group." + group) == []
    assert cluster.committed(f"{group}-b") == []
    a.ctr("task", "kill", "-s", "KILL", xa)
    b.ctr("task", "kill", "-s", "KILL", xb)
