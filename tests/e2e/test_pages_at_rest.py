"""Pages through ARCH's page receiver ([checkpoint] pages_at_rest), under containerd.

`runc checkpoint --page-server 127.0.0.1:PORT` makes CRIU send the container's pages to
ARCH, which stores them as they arrive: encrypted (sealed AES-256-GCM chunks, no plaintext
page on disk) or streamed (plain, digested as they passed). An encrypted checkpoint is
restored only through ARCH's lazy page server, each chunk decrypted and verified in memory.
What a user cares about: the memory pattern never lies on disk in the clear, the job
continues with its memory bit for bit, a tampered byte is never served, and nothing but
this dump's own CRIU gets bytes into the checkpoint.
"""

import json
import os
import socket
import struct
import subprocess
import threading

from archtest import checkpoint, proc, workloads
from test_checkpoint_containerd import check_counter_resumed, request_sum
from test_lazy_restore import lazy_daemons, page_server_log, restore_tampered

# The archtest memory workload writes this word into every other 8 bytes of each page.
MARKER = struct.pack("<Q", 0x41524348434B5054)
IMPOSTOR = b"IMPOSTOR-PAGE-BYTES!"


def with_pages_at_rest(c, mode, e2e_dir):
    """Makes `c`'s archctl use the session's node config with pages_at_rest = `mode`."""
    with open(c.node.path) as f:
        text = f.read()
    directory = os.path.join(e2e_dir, f"etc-pages-{mode}")
    os.makedirs(directory, mode=0o755, exist_ok=True)
    path = os.path.join(directory, "arch.conf")
    with open(path, "w") as f:
        f.write(text + f"\n[checkpoint]\npages_at_rest = {mode}\n")
    os.chmod(path, 0o644)
    c.archctl = checkpoint.Archctl(c.archctl.path, path)


def files_holding(root, needle):
    """Files under `root` whose bytes contain `needle`."""
    out = []
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                if needle in f.read():
                    out.append(p)
    return out


def run_memory(c, cid, mib, ms=100):
    argv = workloads.memory("/data/ticks.txt", "/data/sums.txt", mib=mib, ms=ms)
    c.run(cid, argv)
    c.wait_lines(cid, "/data/ticks.txt", 3, workloads.parse_counter)
    return argv


def test_encrypted_pages_are_never_plain_on_disk_and_restore_bit_for_bit(ctr_containers,
                                                                         e2e_dir):
    c, cid = ctr_containers, checkpoint.new_id("encpages")
    mib = 48
    with_pages_at_rest(c, "encrypted", e2e_dir)
    argv = run_memory(c, cid, mib)
    out = c.checkpoint(cid)
    assert c.delete(cid) == 137
    ckpt = out["checkpoint"]
    images = os.listdir(os.path.join(ckpt, "images"))
    assert any(n.startswith("pages-") and n.endswith(".img.arch") for n in images), images
    assert not [n for n in images if n.startswith("pages-") and n.endswith(".img")], images
    assert "pagemap-1.img" in images or any(n.startswith("pagemap-") for n in images), images
    with open(os.path.join(ckpt, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["extra"]["pages_at_rest"]["mode"] == "encrypted", manifest["extra"]
    assert manifest["encryption"], "the manifest does not name the stream id"
    # No page of the pattern lies anywhere in the store in the clear.
    assert files_holding(c.node.store, MARKER) == [], "plaintext pages in the store"

    # Restored without ARCH_LAZY_RESTORE: encrypted pages go through the page server anyway.
    c.run(cid, argv)
    c.assert_restored(cid, ckpt)
    lazy_work = os.path.join(c.bundle(cid), "arch-restore", "lazy")
    assert os.path.isdir(os.path.join(lazy_work, "images")), c.diagnostics(cid)
    n = check_counter_resumed(c, cid, "/data/ticks.txt", ckpt, progress=3)
    tick, crc = request_sum(c, cid, n)
    assert crc == workloads.expected_memory_crc(tick, mib), (
        f"memory after restoring encrypted pages differs at tick {tick}")
    proc.wait_until(lambda: not lazy_daemons(lazy_work), 60,
                    "the lazy-pages daemon to end after serving every page")
    log = proc.wait_until(lambda: page_server_log(lazy_work), 60, "the page server's outcome")
    assert "pages served" in log and "refused" not in log, log
    # The restore's private images hold only the chunks CRIU reads itself (sparse): the
    # workload's buffer, which is all lazy, is not there.
    assert files_holding(os.path.join(lazy_work, "images"), MARKER * 4) == [], (
        "a decrypted copy of the lazy pages was written")


def test_a_flipped_byte_in_encrypted_pages_is_never_served(ctr_containers, e2e_dir):
    c, cid = ctr_containers, checkpoint.new_id("encbad")
    with_pages_at_rest(c, "encrypted", e2e_dir)
    argv = run_memory(c, cid, 32, ms=200)
    out = c.checkpoint(cid)
    assert c.delete(cid) == 137
    ckpt = out["checkpoint"]
    d = os.path.join(ckpt, "images")
    target = max((os.path.join(d, n) for n in os.listdir(d) if n.endswith(".img.arch")),
                 key=os.path.getsize)
    restore_tampered(c, cid, argv, ckpt, target, "does not verify")


def listening_ports_of(pid):
    """127.0.0.1 TCP ports that process `pid` listens on."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                t = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if t.startswith("socket:["):
                inodes.add(t[8:-1])
    except OSError:
        return []
    ports = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes and local.startswith("0100007F:"):
                ports.append(int(local.split(":")[1], 16))
    return ports


def test_an_impostor_connection_never_gets_bytes_into_the_checkpoint(ctr_containers, e2e_dir):
    """Attack: a process on the node finds the receiver's port and connects before CRIU,
    sending a well-formed stream of its own pages. It is closed unread; CRIU's connection is
    the one admitted; the dump succeeds and the memory is the container's bit for bit."""
    c, cid = ctr_containers, checkpoint.new_id("psimpostor")
    mib = 32
    with_pages_at_rest(c, "streamed", e2e_dir)
    argv = run_memory(c, cid, mib)
    p = subprocess.Popen(c.archctl.argv("container", "checkpoint", f"{c.ns}/{cid}", "-o", "json"),
                         env=c.archctl.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    outcome = {}

    def impostor():
        # Polled tightly: it connects before CRIU (which first freezes the container and
        # captures its writable layer).
        port = proc.wait_until(lambda: (listening_ports_of(p.pid) or [None])[0], 60,
                               "archctl's page receiver to listen", interval=0.002)
        s = socket.create_connection(("127.0.0.1", port))
        hdr = struct.pack("<IIQQQ", 4, 0, 0, 0, 1 << 8 | 1)
        page = (IMPOSTOR * 205)[:4096]
        add = struct.pack("<IIQQQ", 6 | 4 << 16, 0, 1, 0x400000, 1 << 8 | 1)
        try:
            s.sendall(hdr + add + page + struct.pack("<IIQQQ", 0x1023, 0, 0, 0, 0))
            s.settimeout(30)
            outcome["answer"] = s.recv(16)
        except OSError as e:
            outcome["answer"] = e
        s.close()

    t = threading.Thread(target=impostor)
    t.start()
    stdout, stderr = p.communicate(timeout=120)
    t.join(60)
    assert p.returncode == 0, stderr.decode()
    out = json.loads(stdout)
    ckpt = out["checkpoint"]
    assert any("1 connection(s) not from this dump's CRIU closed unread" in n
               for n in out["notes"]), out
    # Closed without an answer (EOF or a reset), never a has_parent byte or a flush status.
    assert outcome.get("answer") in (b"",) or isinstance(outcome.get("answer"), OSError), outcome
    assert files_holding(ckpt, IMPOSTOR) == [], "the impostor's bytes reached the checkpoint"
    with open(os.path.join(ckpt, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["extra"]["pages_at_rest"] == {"mode": "streamed"}, manifest["extra"]
    # Digested as they passed: the sealed chunk digests of the pages images are there.
    assert any(p.startswith("images/pages-") for p in manifest.get("chunks", {})), manifest
    # Streamed pages are plain at rest (the marker search can find them).
    assert files_holding(os.path.join(ckpt, "images"), MARKER), "no pages of the pattern stored"
    assert c.delete(cid) == 137
    c.run(cid, argv)
    c.assert_restored(cid, ckpt)
    n = check_counter_resumed(c, cid, "/data/ticks.txt", ckpt, progress=2)
    tick, crc = request_sum(c, cid, n)
    assert crc == workloads.expected_memory_crc(tick, mib), (
        f"memory after a dump with an impostor connection differs at tick {tick}")
