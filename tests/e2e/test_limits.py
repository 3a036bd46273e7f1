"""Limits on what untrusted input can cost (issue 12, item 7 and 8).

- A rootfs diff that expands beyond the counts its capture recorded in the manifest is
  refused (moved aside, rootfs put back, container started fresh); a legitimate checkpoint
  of the same container restores. (The diff and the manifest's digest are changed
  consistently, as a writer of the store could: these tests assert the limit, not a seal.)
- A job archive bomb (a 2 GiB file in a small zstd archive) is refused without its
  expansion reaching the disk; the honest archive restores.
- archd answers while 64 slow and 16 idle clients hold connections to its socket.
- `archctl job run` passes only the environment given with --env / --env-file.
"""

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time

import pytest

from conftest import archctl_path, archd_path, skip_unless_binaries, skip_unless_root
from archtest import checkpoint, proc, workloads
from archtest.archd import Archd
from archtest.jobs import SH_JOB, Node, pid_gone, wait_count
from test_checkpoint_failures import (COUNT, assert_moved_aside, assert_started_fresh,
                                      checkpoint_uuid, reseal_manifest,
                                      run_counter_and_checkpoint)


def manifest_of(ckpt):
    with open(os.path.join(ckpt, "manifest.json")) as f:
        return json.load(f)


def zstd_stream(write_tar):
    """A zstd stream of the tar that write_tar(fileobj) writes (streamed: no big buffer)."""
    z = subprocess.Popen(["zstd", "-q", "-3", "-c"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
    out = []
    reader = threading.Thread(target=lambda: out.append(z.stdout.read()))
    reader.start()
    write_tar(z.stdin)
    z.stdin.close()
    reader.join()
    assert z.wait() == 0
    return out[0]


class Zeros(io.RawIOBase):
    """n zero bytes, read in pieces (the bomb's content)."""

    def __init__(self, n):
        self.left = n

    def readable(self):
        return True

    def readinto(self, b):
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


# ---------------------------------------------------------------- rootfs diff

def test_rootfs_diff_expanding_beyond_its_manifest_is_refused(ctr_containers):
    if not shutil.which("zstd"):
        pytest.skip("no zstd command")
    c, cid = ctr_containers, checkpoint.new_id("diffbomb")
    ckpt = run_counter_and_checkpoint(c, cid)
    old_uuid = checkpoint_uuid(ckpt)
    recorded = manifest_of(ckpt)["extra"]["rootfs_diff"]
    with checkpoint._diff_tar(ckpt) as src:  # plain or zstd
        members = [(m, src.extractfile(m).read() if m.isreg() else None)
                   for m in src.getmembers()]
    data_bytes = sum(m.size for m, _ in members if m.isreg())
    assert recorded["bytes"] == data_bytes, (recorded, data_bytes)
    assert recorded["entries"] == len(members), (recorded, len(members))

    # The same diff and one more file: 1 GiB of zeros, a few hundred KB compressed.
    diff_path = os.path.join(ckpt, "rootfs-diff.tar")

    def write(out):
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as t:
            for m, data in members:
                t.addfile(m, io.BytesIO(data) if data is not None else None)
            bomb = tarfile.TarInfo("data/bomb")
            bomb.size = 1 << 30
            t.addfile(bomb, Zeros(bomb.size))

    bomb_diff = zstd_stream(write)
    assert len(bomb_diff) < 2 << 20, len(bomb_diff)
    with open(diff_path, "wb") as f:
        f.write(bomb_diff)
    # The digest only, sealed again with the node key (as only the admin could): extra keeps
    # its counts, so the limit, not the seal, must stop it.
    reseal_manifest(ckpt, ["rootfs-diff.tar"], c.node.keys)

    start = time.monotonic()
    r = c.run(cid, workloads.counter(COUNT), check=False)
    try:
        assert r.returncode == 0, r.stderr
        reason = assert_moved_aside(c, cid, "expands past its limit")
        assert f"{recorded['bytes']} bytes" in reason or f"{recorded['entries']} entries" in reason, \
            reason
        assert time.monotonic() - start < 60, "the refusal took as long as the expansion"
        assert_started_fresh(c, cid, old_uuid)
        # The legitimate flow on the same container: checkpoint, rerun, restored.
        out = c.checkpoint(cid)
        assert c.delete(cid) == 137
        c.run(cid, workloads.counter(COUNT))
        c.assert_restored(cid, out["checkpoint"])
    finally:
        c.remove(cid)


# ---------------------------------------------------------------- job archives

@pytest.fixture
def job_node(node_config, e2e_dir):
    """make(restore_section="") -> a started Node whose config has that [restore] section."""
    skip_unless_root()
    skip_unless_binaries(archd_path(), archctl_path())
    if node_config.criu is None:
        pytest.skip("no CRIU at $ARCH_CRIU_PREFIX/bin/criu")
    made = []

    def make(restore_section=""):
        base = tempfile.mkdtemp(prefix="limitsnode-", dir=e2e_dir)
        n = Node(archd_path(), archctl_path(), base, node_config)
        with open(n.archd.config, "a") as f:
            f.write("[restore]\n" + restore_section)
        made.append(n.start())
        return n

    yield make
    for n in made:
        n.cleanup()


def disk_bytes(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


class DiskWatch:
    """The largest disk use under `path` seen while it runs (polled every 20 ms)."""

    def __init__(self, path):
        self.path, self.peak, self.stop = path, 0, threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, disk_bytes(self.path))
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def archive_members(path):
    data = subprocess.run(["zstd", "-q", "-d", "-c", path], stdout=subprocess.PIPE,
                          check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return [(m, t.extractfile(m).read() if m.isreg() else None) for m in t.getmembers()]


def write_archive(path, members, bomb_name, bomb_size, manifest=None):
    """The archive's members in order, `bomb_name` replaced by bomb_size zero bytes and
    manifest.json by `manifest` when given."""
    def write(out):
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as t:
            for m, data in members:
                if m.name == bomb_name:
                    m.size = bomb_size
                    t.addfile(m, Zeros(bomb_size))
                elif m.name == "manifest.json" and manifest is not None:
                    text = json.dumps(manifest).encode()
                    m.size = len(text)
                    t.addfile(m, io.BytesIO(text))
                else:
                    t.addfile(m, io.BytesIO(data) if data is not None else None)
    with open(path, "wb") as f:
        f.write(zstd_stream(write))


def test_job_archive_bomb_is_refused_without_expanding(job_node, e2e_dir):
    if not shutil.which("zstd"):
        pytest.skip("no zstd command")
    a = job_node()
    b = job_node("max_archive_bytes = 256M\n")
    d = tempfile.mkdtemp(prefix="job-", dir=e2e_dir)
    export_dir = tempfile.mkdtemp(prefix="exports-", dir=e2e_dir)
    job_id = a.run_job(d, "/bin/sh", "-c", SH_JOB)
    count_file = os.path.join(d, "count.txt")
    wait_count(count_file, 10)
    out = a.checkpoint(job_id, "--export", export_dir)
    good = out["archive"]
    members = archive_members(good)
    assert members[0][0].name == "manifest.json", [m.name for m, _ in members[:3]]
    # CRIU's images sit under checkpoint/ in the archive (Podman's layout), images/ in the
    # store and the manifest.
    pages = next(m.name for m, _ in members if m.name.startswith("checkpoint/pages-"))
    pages_in_manifest = "images/" + pages.split("/", 1)[1]
    manifest = json.loads(members[0][1])
    two_gib = 2 << 30

    # 1: the file is 2 GiB, its manifest says otherwise. 2: the manifest says 2 GiB too
    # (and its digest is recomputed): the node's 256 MiB cap holds.
    bomb = os.path.join(export_dir, "bomb.tar.zst")
    write_archive(bomb, members, pages, two_gib)
    lying = os.path.join(export_dir, "lying.tar.zst")
    for f in manifest["files"]:
        if f["path"] == pages_in_manifest:
            f["size"] = two_gib
            f["sha256"] = hashlib.sha256(b"").hexdigest()
    cases = [(bomb, "the manifest says"), (lying, "expands past its limit")]
    # A self-consistent lie: the pages image's per-chunk digests (lazy restore's) cover
    # 2 GiB too, so that the node's cap, not a count mismatch, is what refuses it. The
    # inconsistent lie (a size its chunk digests do not cover) is refused from the manifest.
    chunks = (manifest.get("chunks") or {}).get(pages_in_manifest)
    if chunks:
        miscounted = os.path.join(export_dir, "miscounted.tar.zst")
        write_archive(miscounted, members, pages, two_gib, manifest)
        cases.append((miscounted, "chunk digests for"))
        n = -(-two_gib // chunks["size"])
        chunks["sha256"] = [hashlib.sha256(b"").hexdigest()] * n
    write_archive(lying, members, pages, two_gib, manifest)
    assert os.path.getsize(bomb) < 1 << 20 and os.path.getsize(lying) < 1 << 20

    for path, why in cases:
        with DiskWatch(b.store) as watch:
            start = time.monotonic()
            r = b.ctl("job", "restore", "--from", path, check=False)
        assert r.returncode != 0, f"{path} restored?\n{r.stdout}"
        assert why in r.stderr and path in r.stderr, r.stderr
        assert watch.peak < 64 << 20, f"{path}: the import wrote {watch.peak} bytes"
        assert time.monotonic() - start < 60
        assert b.jobs() == {}
        assert pid_gone(out["job"]["pid"])
    # The honest archive restores on the same node.
    n = len(open(count_file).read().splitlines())
    b.restore("--from", good)
    wait_count(count_file, n + 10)
    b.ctl("job", "rm", "--force", job_id)


def test_job_run_passes_only_the_given_environment(job_node, e2e_dir):
    n = job_node()
    d = tempfile.mkdtemp(prefix="job-", dir=e2e_dir)
    env_file = os.path.join(d, "job.env")
    with open(env_file, "w") as f:
        f.write("FROM_FILE=1\nBOTH=file\n")
    script = "env > env.txt; sleep 600"
    caller = dict(n.archd.env(), ARCH_TEST_SECRET="do-not-pass", PASSED_BY_NAME="by-name")
    r = proc.run([archctl_path(), "job", "run", "--dir", d, "--env-file", env_file, "--env",
                  "BOTH=flag", "-e", "PASSED_BY_NAME", "--env", "X=a=b", "--", "/bin/sh", "-c",
                  script], env=caller, timeout=60)
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    path = os.path.join(d, "env.txt")
    proc.wait_until(lambda: os.path.exists(path) and open(path).read().endswith("\n"), 20,
                    "the job to write its environment")
    env = dict(line.split("=", 1) for line in open(path).read().splitlines() if "=" in line)
    assert env.get("FROM_FILE") == "1" and env.get("BOTH") == "flag", env
    assert env.get("PASSED_BY_NAME") == "by-name" and env.get("X") == "a=b", env
    assert "ARCH_TEST_SECRET" not in env and "ARCH_CONFIG" not in env, env
    bad = proc.run([archctl_path(), "job", "run", "--env", "NOT_SET_ANYWHERE_X", "--", "/bin/true"],
                   env=n.archd.env(), timeout=60)
    assert bad.returncode != 0 and "NOT_SET_ANYWHERE_X" in bad.stderr, bad.stderr
    n.ctl("job", "rm", "--force", job_id)


# ---------------------------------------------------------------- archd connections

def test_archd_answers_while_slow_clients_hold_connections(node_config, e2e_dir):
    skip_unless_root()
    skip_unless_binaries(archd_path(), archctl_path())
    base = tempfile.mkdtemp(prefix="archd-", dir=e2e_dir)
    a = Archd(archd_path(), base, node_config, parallel=0, metrics=False)
    a.start()
    held = []
    stop = threading.Event()
    try:
        # 64 clients that send a request one byte a second, 16 that send nothing.
        for i in range(80):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(a.socket)
            held.append(s)

        def drip():
            request = b"GET /v1/node/status HTTP/1.1\r\nHost: archd\r\nX-Slow: " + b"a" * 4096
            for k in range(len(request)):
                if stop.wait(1.0):
                    return
                for s in held[:64]:
                    try:
                        s.send(request[k:k + 1])
                    except OSError:
                        pass
        dripper = threading.Thread(target=drip)
        dripper.start()
        time.sleep(2)
        for attempt in range(3):
            start = time.monotonic()
            r = proc.run([archctl_path(), "node", "status"], env=a.env(), timeout=30)
            took = time.monotonic() - start
            assert r.returncode == 0, r.stderr
            assert took < 5, f"archd took {took:.1f}s to answer with slow clients connected"
            time.sleep(1)
        # The slow clients are cut at their deadline.
        cut = [s for s in held if _closed_by_peer(s)]
        assert len(cut) == len(held), f"{len(held) - len(cut)} slow connections still open"
    finally:
        stop.set()
        for s in held:
            s.close()
        assert a.stop() == 0, a.log_text()


def _closed_by_peer(s, wait=15):
    s.settimeout(wait)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
