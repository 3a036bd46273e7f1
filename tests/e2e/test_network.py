"""The network comes back, and established TCP connections follow the container's policy.

- A server in a container with its own network namespace (ctr run: a namespace without
  path) answers on its loopback port after checkpoint, removal and re-creation; the
  manifest records the namespace and the restored `lo` is up.
- A checkpoint whose recorded interfaces do not come back (tampered and resealed with the
  node key: an eth0 nobody remakes) is refused by the check after the restore, moved aside
  with the reason, and the container starts fresh.
- A client streaming records over an established TCP connection to a server in another
  network namespace (veth pair, joined through `ctr run --with-ns`, as a pod sandbox)
  is checkpointed with it: re-created on the same node in the same namespace (auto:
  restored), or rescheduled into a namespace with another address (auto: closed, the
  client sees the loss and reconnects); the server's records are 1..N, none lost or
  repeated, and the client is the same process (restored, not restarted).
- ARCH_TCP=fail refuses the checkpoint of a container with a connection; it keeps running.
- Attack: ARCH_TCP values that are not exactly a policy name (CRIU options, newlines) are
  refused at checkpoint (container keeps running, nothing written to CRIU) and at restore
  (checkpoint kept, not restored).
"""

import os
import secrets
import subprocess
import sys
import textwrap

import pytest

from archtest import checkpoint, proc, seal, workloads

HTTP_REQUEST = "printf 'GET /motd HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 8080"
SERVER = ["sh", "-c", "exec httpd -f -p 127.0.0.1:8080 -h /etc"]


def run_ctr(c, cid, argv, env=(), flags=(), check=True):
    """ctr run -d with extra ctr flags (e.g. --with-ns) inserted after -d."""
    full = c.run_argv(cid, argv, env)
    at = full.index("-d") + 1
    full[at:at] = list(flags)
    c.created[cid] = c.node.store
    r = proc.run(full, timeout=60)
    if check:
        assert r.returncode == 0, f"ctr run {cid} failed: {r.stderr}\n{c.diagnostics(cid)}"
        c.wait_status(cid, "RUNNING")
    return r


def http_get(c, cid):
    r = c.exec(cid, "sh", "-c", HTTP_REQUEST, check=False, timeout=20)
    return r.stdout


def wait_answers(c, cid):
    return proc.wait_until(lambda: "welcome to the ARCH test image" in http_get(c, cid), 20,
                           f"{cid}'s server to answer on 127.0.0.1:8080", interval=0.1)


def lo_state(c, cid):
    return c.exec(cid, "ip", "link", "show", "lo").stdout


def test_restored_server_answers_on_its_loopback_port(ctr_containers):
    c, cid = ctr_containers, checkpoint.new_id("httpd")
    run_ctr(c, cid, SERVER)
    wait_answers(c, cid)
    out = c.checkpoint(cid)
    ckpt = out["checkpoint"]
    doc = seal.read_manifest(ckpt)
    net = doc["extra"]["network"]
    assert net["mode"] == "own" and net["criu_key"] == "arch-netns", net
    lo = [i for i in net["interfaces"] if i["name"] == "lo"]
    assert lo and lo[0]["up"] and "127.0.0.1/8" in lo[0]["addresses"], net
    assert doc["extra"]["tcp"]["dumped"] is False, doc["extra"]["tcp"]
    with open(os.path.join(ckpt, "criu", "arch-criu.conf")) as f:
        assert "external net[" in f.read()
    assert c.delete(cid) == 137

    run_ctr(c, cid, SERVER)
    c.assert_restored(cid, ckpt)
    assert "UP" in lo_state(c, cid).split(">")[0], lo_state(c, cid)
    wait_answers(c, cid)
    # The same process answers (restored), not a new one.
    ps = c.exec(cid, "ps", "-o", "pid,args").stdout
    assert "httpd -f -p 127.0.0.1:8080" in ps, ps
    assert any("own namespace remade" in m for m in c.log_messages(cid)), c.log_messages(cid)


def test_restore_check_refuses_a_namespace_without_its_interfaces(ctr_containers, node_config):
    c, cid = ctr_containers, checkpoint.new_id("netcheck")
    run_ctr(c, cid, SERVER)
    wait_answers(c, cid)
    ckpt = c.checkpoint(cid)["checkpoint"]
    assert c.delete(cid) == 137
    # The node admin's view of a checkpoint whose namespace had an eth0 (what a CNI or a
    # network hook makes) that nothing remakes on this node: resealed with the node key,
    # so only the check after the restore can refuse it.
    doc = seal.read_manifest(ckpt)
    doc["extra"]["network"]["interfaces"].append(
        {"name": "eth0", "kind": "veth", "up": True, "addresses": ["10.99.0.2/24"]})
    seal.write_manifest(ckpt, seal.seal(doc, *seal.read_key(node_config.keys)))

    run_ctr(c, cid, SERVER)
    errors = c.log_messages(cid, "error")
    assert any("lacks interfaces that were up at the checkpoint: eth0 (missing)" in m
               for m in errors), errors
    assert not any("restored from" in m for m in c.log_messages(cid)), c.log_messages(cid)
    entries = c.checkpoints(cid)
    assert [x["state"] for x in entries] == ["failed"], entries
    assert "eth0 (missing)" in entries[0]["reason"], entries[0]
    wait_answers(c, cid)  # started fresh, and its own fresh server answers


# ---------------------------------------------------------------- TCP across namespaces

SERVER_PY = textwrap.dedent("""
    import socket, sys, threading
    port, path = int(sys.argv[1]), sys.argv[2]
    lock = threading.Lock()
    records = []
    out = open(path, "a", buffering=1)

    def handle(conn):
        try:
            with lock:
                held = len(records)
            conn.sendall(f"{held}\\n".encode())
            buf = b""
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
                while b"\\n" in buf:
                    line, buf = buf.split(b"\\n", 1)
                    with lock:
                        records.append(int(line))
                        out.write(line.decode() + "\\n")
                    conn.sendall(line + b"\\n")
        except OSError:
            pass
        finally:
            conn.close()

    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()
""")


def ip(*args):
    return proc.run(["ip", *args], check=True)


class Net:
    """Network namespaces for one test: `srv` with the record server, and pods joined by
    containers, each linked to srv by a veth pair (10.<n>.0.1 srv side)."""

    def __init__(self, base):
        self.tag = secrets.token_hex(3)
        self.subnet = 100 + secrets.randbelow(100)
        self.names = []
        self.server = None
        self.records = os.path.join(base, f"records-{self.tag}.txt")
        self.srv = self.netns("s")
        ip("-n", self.srv, "link", "set", "lo", "up")

    def netns(self, kind):
        name = f"arch-{kind}-{self.tag}-{len(self.names)}"
        ip("netns", "add", name)
        self.names.append(name)
        return name

    def pod(self, host):
        """A namespace joined to srv; its address is 10.<subnet>.<host>.2, srv's .1."""
        name = self.netns("p")
        a, b = f"va{self.tag}{host}", f"vb{self.tag}{host}"
        ip("link", "add", a, "type", "veth", "peer", "name", b)
        ip("link", "set", a, "netns", self.srv)
        ip("link", "set", b, "netns", name)
        ip("-n", self.srv, "addr", "add", f"10.{self.subnet}.{host}.1/24", "dev", a)
        ip("-n", self.srv, "link", "set", a, "up")
        ip("-n", name, "link", "set", b, "name", "eth0")  # as a CNI names it in every pod
        ip("-n", name, "addr", "add", f"10.{self.subnet}.{host}.2/24", "dev", "eth0")
        ip("-n", name, "link", "set", "eth0", "up")
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def start_server(self, port=9000):
        script = self.records + ".py"
        with open(script, "w") as f:
            f.write(SERVER_PY)
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", self.srv, sys.executable, script, str(port), self.records],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.server.stdout.readline().strip() == "ready"

    def records_held(self):
        try:
            with open(self.records) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def close(self):
        if self.server is not None:
            proc.stop_process(self.server)
        for name in reversed(self.names):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def net(e2e_dir):
    if not os.access("/usr/sbin/ip", os.X_OK):
        pytest.skip("iproute2 is missing")
    n = Net(e2e_dir)
    try:
        yield n
    finally:
        n.close()


def client(host, subnet):
    return [workloads.IN_IMAGE, "tcpclient", f"10.{subnet}.{host}.1", "9000", "/data/client.log",
            "20"]


def wait_records(net, minimum, timeout=30):
    return proc.wait_until(lambda: len(net.records_held()) >= minimum and net.records_held(),
                           timeout, f"the server to hold {minimum} records", interval=0.05)


def check_records(values):
    assert values == list(range(1, len(values) + 1)), (
        "records lost or repeated across the checkpoint: " +
        str([(i + 1, v) for i, v in enumerate(values) if v != i + 1][:5]))


def client_log(c, cid):
    lines = workloads.complete_lines(c.read(cid, "/data/client.log") or "")
    assert lines and lines[0].startswith("start "), lines
    return lines


def tcp_checkpoint(c, net, cid, env=()):
    """The client in a pod namespace, streaming; checkpointed with its connection."""
    pod = net.pod(1)
    net.start_server()
    flags = ["--with-ns", f"network:/run/netns/{pod}"]
    run_ctr(c, cid, client(1, net.subnet), env, flags)
    wait_records(net, 20)
    out = c.checkpoint(cid)
    doc = seal.read_manifest(out["checkpoint"])
    tcp = doc["extra"]["tcp"]
    assert tcp["dumped"] is True and len(tcp["connections"]) == 1, tcp
    assert tcp["connections"][0]["remote"] == f"10.{net.subnet}.1.1:9000", tcp
    assert doc["extra"]["network"]["mode"] == "external", doc["extra"]["network"]
    assert c.delete(cid) == 137
    return out["checkpoint"], pod


def test_tcp_connection_on_the_same_node_continues(ctr_containers, net):
    c, cid = ctr_containers, checkpoint.new_id("tcpsame")
    ckpt, pod = tcp_checkpoint(c, net, cid)
    held = len(net.records_held())
    run_ctr(c, cid, client(1, net.subnet), (), ["--with-ns", f"network:/run/netns/{pod}"])
    c.assert_restored(cid, ckpt)
    assert any("1 TCP connection(s) restored" in m for m in c.log_messages(cid)), (
        c.log_messages(cid))
    check_records(wait_records(net, held + 30))
    log = client_log(c, cid)
    assert sum(1 for x in log if x.startswith("start ")) == 1, log  # restored, not restarted
    # The same connection went on: the peer never saw the container end (CRIU ended it
    # with the socket in repair mode and the connection locked until the restore).
    assert log.count("connect") == 1 and not any(x.startswith("lost ") for x in log), log
    assert seal.read_manifest(ckpt)["extra"]["tcp"]["ended_by_dump"] is True


def test_tcp_connection_rescheduled_is_closed_and_the_client_reconnects(ctr_containers, net):
    c, cid = ctr_containers, checkpoint.new_id("tcpmove")
    ckpt, _ = tcp_checkpoint(c, net, cid)
    held = len(net.records_held())
    other = net.pod(2)  # another namespace, another address: rescheduled
    run_ctr(c, cid, client(1, net.subnet), (), ["--with-ns", f"network:/run/netns/{other}"])
    c.assert_restored(cid, ckpt)
    assert any("1 TCP connection(s) closed" in m for m in c.log_messages(cid)), (
        c.log_messages(cid))
    # The restored client still talks to 10.x.1.1: srv routes it over the second veth.
    ip("-n", other, "route", "add", f"10.{net.subnet}.1.0/24", "via", f"10.{net.subnet}.2.1")
    check_records(wait_records(net, held + 30))
    log = client_log(c, cid)
    assert sum(1 for x in log if x.startswith("start ")) == 1, log
    assert any(x.startswith("lost ") for x in log) and log.count("connect") >= 2, log


def test_tcp_fail_refuses_the_checkpoint_and_the_container_keeps_running(ctr_containers, net):
    c, cid = ctr_containers, checkpoint.new_id("tcpfail")
    pod = net.pod(1)
    net.start_server()
    run_ctr(c, cid, client(1, net.subnet), ["ARCH_TCP=fail"],
            ["--with-ns", f"network:/run/netns/{pod}"])
    wait_records(net, 10)
    r = c.archctl.run("container", "checkpoint", f"{c.ns}/{cid}", "-o", "json")
    assert r.returncode != 0, r.stdout
    err = r.stdout + r.stderr  # -o json: the error is JSON on stdout
    assert "TCP" in err and "policy is fail" in err, err
    assert c.status(cid) == "RUNNING"
    held = len(net.records_held())
    check_records(wait_records(net, held + 10))
    assert c.checkpoints(cid) == []


@pytest.mark.parametrize("value", ["close\ntcp-close", "auto --action-script=/bin/sh",
                                   "restore;exec-cmd", "AUTO", " auto", "tcp-close"])
def test_arch_tcp_cannot_inject_criu_options(ctr_containers, value):
    c, cid = ctr_containers, checkpoint.new_id("tcpinj")
    run_ctr(c, cid, SERVER, [f"ARCH_TCP={value}"])
    r = c.archctl.run("container", "checkpoint", f"{c.ns}/{cid}", "-o", "json")
    assert r.returncode != 0 and "ARCH_TCP must be auto, restore, close or fail" in r.stdout, (
        r.stdout, r.stderr)
    assert c.status(cid) == "RUNNING"
    assert c.checkpoints(cid) == []


def test_arch_tcp_malformed_at_restore_keeps_the_checkpoint(ctr_containers):
    c, cid = ctr_containers, checkpoint.new_id("tcpinj2")
    run_ctr(c, cid, SERVER)
    wait_answers(c, cid)
    ckpt = c.checkpoint(cid)["checkpoint"]
    assert c.delete(cid) == 137
    run_ctr(c, cid, SERVER, ["ARCH_TCP=close\ninherit-fd fd[0]:x"])
    errors = c.log_messages(cid, "error")
    assert any("ARCH_TCP must be" in m and "kept, not restored" in m for m in errors), errors
    assert [x["state"] for x in c.checkpoints(cid)] == ["committed"], c.checkpoints(cid)
    assert not os.path.exists(os.path.join(c.bundle(cid), "arch-restore",
                                           "arch-criu-restore.conf"))
    wait_answers(c, cid)  # the fresh server
    assert ckpt


def test_restored_server_in_a_joined_namespace_answers_from_outside(ctr_containers, net):
    """A server in a pod-like namespace (joined by path) is reached over the veth from the
    other namespace after checkpoint, removal and re-creation in the same namespace."""
    c, cid = ctr_containers, checkpoint.new_id("httpdout")
    pod = net.pod(1)
    flags = ["--with-ns", f"network:/run/netns/{pod}"]
    server = ["sh", "-c", "exec httpd -f -p 0.0.0.0:8080 -h /etc"]
    address = f"10.{net.subnet}.1.2"

    def answers():
        r = subprocess.run(["ip", "netns", "exec", net.srv, "busybox", "nc", address, "8080"],
                           input="GET /motd HTTP/1.0\r\n\r\n", capture_output=True, text=True,
                           timeout=10)
        return "welcome to the ARCH test image" in r.stdout

    run_ctr(c, cid, server, (), flags)
    proc.wait_until(answers, 20, "the server to answer from outside", interval=0.1)
    ckpt = c.checkpoint(cid)["checkpoint"]
    assert seal.read_manifest(ckpt)["extra"]["network"]["mode"] == "external"
    assert c.delete(cid) == 137
    run_ctr(c, cid, server, (), flags)
    c.assert_restored(cid, ckpt)
    proc.wait_until(answers, 20, "the restored server to answer from outside", interval=0.1)


@pytest.mark.parametrize("kind", ["file", "dir", "pidns"])
def test_joined_namespace_path_that_is_not_a_network_namespace_is_refused(ctr_containers,
                                                                          tmp_path, kind):
    """Attack: the new container's spec names as its network namespace a plain file, a
    directory or another kind of namespace (the host's pid namespace), which root would
    otherwise hand to CRIU to restore into. The restore refuses it before any generation is
    tried and keeps the checkpoint; the same container run again with a proper spec is
    restored from it. (A FIFO there: ARCH opens without blocking, but runc itself then
    blocks on it in create, with or without ARCH.)"""
    c, cid = ctr_containers, checkpoint.new_id("nsfake")
    run_ctr(c, cid, SERVER)
    wait_answers(c, cid)
    ckpt = c.checkpoint(cid)["checkpoint"]
    assert c.delete(cid) == 137
    fake = {"pidns": "/proc/1/ns/pid"}.get(kind, str(tmp_path / kind))
    if kind == "dir":
        os.mkdir(fake)
    elif kind == "file":
        with open(fake, "w") as f:
            f.write("not a namespace\n")
    r = run_ctr(c, cid, SERVER, (), ["--with-ns", f"network:{fake}"], check=False)
    assert r.returncode != 0, "runc itself cannot join that path"
    assert [x["state"] for x in c.checkpoints(cid)] == ["committed"], c.checkpoints(cid)
    c.remove(cid)
    run_ctr(c, cid, SERVER)
    c.assert_restored(cid, ckpt)
    wait_answers(c, cid)
