"""What ARCH does when checkpoint or restore goes wrong (containerd, ctr).

- A corrupted checkpoint is never restored: it is moved aside with the reason (visible in
  `archctl checkpoint list`), the container starts fresh, log.json says why; with
  ARCH_RESTORE_FAILURE=fail the create fails instead. A checkpoint that passes the
  manifest but that CRIU cannot restore leaves no file of its rootfs diff behind.
- archctl killed (SIGKILL) at several points of a checkpoint: the container keeps
  running (or has ended), no partial checkpoint is committed, and the previous good
  checkpoint still restores.
- Restoring into an image whose directory is a symlink to a host path (absolute or
  climbing), or from a rootfs diff that carries such a symlink or hardlink, never
  touches anything outside the container's rootfs.
- A full store (a 1 MiB tmpfs for a container holding 64 MiB) fails the checkpoint with
  an error about space; the container keeps running and nothing is committed.
"""

import hashlib
import io
import os
import secrets
import shutil
import subprocess
import tarfile

import pytest

from archtest import checkpoint, daemons, image, proc, seal, workloads

COUNT = "/data/count.txt"


def run_counter_and_checkpoint(c, cid, extra=()):
    """A counter container checkpointed (it then ends, unless --leave-running is in extra)."""
    c.run(cid, workloads.counter(COUNT))
    c.wait_lines(cid, COUNT, 10, workloads.parse_counter)
    out = c.checkpoint(cid, extra)
    if "--leave-running" not in extra:
        assert c.delete(cid) == 137
    return out["checkpoint"]


def checkpoint_uuid(ckpt):
    return workloads.parse_counter(checkpoint.diff_member(ckpt, COUNT).decode())[0]


def flip_byte(path, offset=None):
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        offset = size // 2 if offset is None else offset
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def pages_image(ckpt):
    images = os.path.join(ckpt, "images")
    pages = sorted(n for n in os.listdir(images) if n.startswith("pages-") and n.endswith(".img"))
    assert pages, os.listdir(images)
    return os.path.join(images, pages[0])


def reseal_manifest(ckpt, rel_paths, keys_dir):
    """Updates the manifest's size and sha256 of files changed on purpose and seals it again
    with the node key (as only the node admin could), so the manifest verifies and the
    damage reaches the restore itself."""
    manifest = seal.recompute_files(seal.read_manifest(ckpt), ckpt, rel_paths)
    seal.write_manifest(ckpt, seal.seal(manifest, *seal.read_key(keys_dir)))


def assert_started_fresh(c, cid, old_uuid):
    """The container runs its command from the start: one start line, a new one, counting
    from 1; nothing of the checkpointed file (the rootfs diff) before it."""
    def two_values():
        if c.status(cid) != "RUNNING":
            raise AssertionError(f"the fresh container is {c.status(cid)}, not running "
                                 f"(it could not write {COUNT})\n{c.diagnostics(cid)}")
        text = c.read(cid, COUNT) or ""
        return text if len(workloads.complete_lines(text)) >= 3 else None

    text = proc.wait_until(two_values, 30, f"{cid} to count")
    starts = [line for line in workloads.complete_lines(text) if line.startswith("start ")]
    assert len(starts) == 1, (
        f"{COUNT} holds the checkpointed lines and then a fresh start: the rootfs diff of the "
        f"bad checkpoint stayed applied\n{text[:2000]}\n{c.diagnostics(cid)}")
    uuid, values = workloads.parse_counter(text)
    assert uuid != old_uuid, (
        f"the checkpointed process came back although its checkpoint is bad\n{c.diagnostics(cid)}")
    workloads.check_sequence(values, "the fresh container's counter")


def assert_moved_aside(c, cid, *reason_words):
    listed = c.checkpoints(cid)
    assert [x["state"] for x in listed] == ["failed"], listed
    reason = listed[0]["reason"]
    for word in reason_words:
        assert word in reason, f"the reason {reason!r} does not mention {word!r}"
    failed_dir = listed[0]["path"]
    assert os.path.basename(failed_dir).startswith("failed-"), failed_dir
    with open(os.path.join(failed_dir, "reason.txt")) as f:
        assert f.read().strip(), "reason.txt is empty"
    return reason


# ---------------------------------------------------------------- corrupt checkpoints

def test_corrupt_pages_image_is_moved_aside_and_container_starts_fresh(ctr_containers):
    c, cid = ctr_containers, checkpoint.new_id("corrupt")
    ckpt = run_counter_and_checkpoint(c, cid)
    old_uuid = checkpoint_uuid(ckpt)
    pages = pages_image(ckpt)
    flip_byte(pages)

    c.run(cid, workloads.counter(COUNT))
    assert_started_fresh(c, cid, old_uuid)
    assert_moved_aside(c, cid, os.path.basename(pages))
    errors = c.log_messages(cid, "error")
    assert any(os.path.basename(pages) in m and "starting the container fresh" in m
               for m in errors), f"log.json does not say what happened: {c.log_messages(cid)}"


def test_restore_failure_policy_fail_fails_the_create(ctr_containers):
    c, cid = ctr_containers, checkpoint.new_id("failpolicy")
    ckpt = run_counter_and_checkpoint(c, cid)
    pages = pages_image(ckpt)
    flip_byte(pages)

    r = c.run(cid, workloads.counter(COUNT), env=["ARCH_RESTORE_FAILURE=fail"], check=False)
    assert r.returncode != 0, f"the create should have failed: {r.stdout} {r.stderr}"
    assert os.path.basename(pages) in r.stderr, f"ctr's error does not say why: {r.stderr}"
    assert c.status(cid) != "RUNNING"
    assert_moved_aside(c, cid, os.path.basename(pages))


def test_checkpoint_criu_cannot_restore_leaves_no_trace_of_its_rootfs(ctr_containers):
    """The manifest verifies but CRIU fails: the rootfs diff that was already applied is
    taken back, the checkpoint moved aside, and the container starts fresh."""
    c, cid = ctr_containers, checkpoint.new_id("criufail")
    ckpt = run_counter_and_checkpoint(c, cid)
    old_uuid = checkpoint_uuid(ckpt)
    inventory = os.path.join(ckpt, "images", "inventory.img")
    with open(inventory, "r+b") as f:
        f.write(b"\0" * os.fstat(f.fileno()).st_size)
    reseal_manifest(ckpt, ["images/inventory.img"], c.node.keys)
    assert [x["state"] for x in c.archctl.json("checkpoint", "list", "--verify")
            if x["key"] == cid] == ["verified"]

    c.run(cid, workloads.counter(COUNT))
    assert_started_fresh(c, cid, old_uuid)
    reason = assert_moved_aside(c, cid)
    assert "restore" in reason.lower(), reason
    assert any("starting the container fresh" in m for m in c.log_messages(cid, "error")), (
        c.log_messages(cid))


# ---------------------------------------------------------------- archctl killed

def wait_point(point, c, cid, archctl_proc):
    """Returns once archctl reached `point` of its checkpoint of cid."""
    key_dir = checkpoint.store_key_dir(c.node.store, c.ns, cid)

    def staging():
        try:
            return [os.path.join(key_dir, n) for n in os.listdir(key_dir)
                    if n.startswith("staging-")]
        except FileNotFoundError:
            return []

    def reached():
        if archctl_proc.poll() is not None:
            raise AssertionError(f"archctl finished before reaching {point}: "
                                 f"{archctl_proc.communicate()}")
        if point == "staging":
            return staging()
        if point == "dumping":
            return any(os.path.exists(os.path.join(s, "criu", "dump.log")) or
                       any(n.startswith("pages-") for n in os.listdir(os.path.join(s, "images")))
                       if os.path.isdir(os.path.join(s, "images")) else False
                       for s in staging())
        return True

    proc.wait_until(reached, 30, f"archctl to reach {point}", interval=0.001)


@pytest.mark.parametrize("point", ["started", "staging", "dumping"])
def test_archctl_killed_mid_checkpoint_leaves_previous_checkpoint_usable(ctr_containers, point):
    c, cid = ctr_containers, checkpoint.new_id(f"kill-{point}")
    good = run_counter_and_checkpoint(c, cid, extra=("--leave-running",))
    _, values = c.wait_lines(cid, COUNT, 10, workloads.parse_counter)
    c.wait_lines(cid, COUNT, len(values) + 5, workloads.parse_counter)
    problems = []  # reported at the end, after everything else was checked

    p = c.archctl.popen("container", "checkpoint", f"{c.ns}/{cid}")
    try:
        wait_point(point, c, cid, p)
    finally:
        # Its children (runc checkpoint, CRIU) run on; they must finish by themselves.
        checkpoint.kill9_and_check_children(p, 30, "archctl")

    committed = [x for x in c.checkpoints(cid) if x["state"] in ("committed", "verified")]
    assert [x["path"] for x in committed] == [good], (
        f"only the good checkpoint may be committed: {c.checkpoints(cid)}")

    # archctl's thaw guard resumes the container when archctl dies: give it a moment.
    try:
        proc.wait_until(lambda: c.runc_status(cid) != "paused", 10, "the thaw guard", interval=0.02)
    except proc.WaitTimeout:
        pass
    status = c.runc_status(cid)
    if status == "paused":
        listed = [x for x in c.archctl.json("container", "list") if x["id"] == cid]
        problems.append(
            f"archctl killed at '{point}' left the container frozen: runc state 'paused' "
            f"(containerd still says {c.status(cid)}, archctl container list says "
            f"{listed[0]['status'] if listed else 'nothing'}); nothing thaws it, its "
            f"processes make no progress and a later checkpoint refuses it. Thawed by the test.")
        c.runc("resume", cid)
        status = c.runc_status(cid)
    assert status in ("running", "stopped"), f"the container is {status}\n{c.diagnostics(cid)}"
    if status == "running":
        _, now = c.wait_lines(cid, COUNT, 1, workloads.parse_counter)
        c.wait_lines(cid, COUNT, len(now) + 5, workloads.parse_counter, timeout=10)
        c.env.ctr("task", "kill", "-s", "SIGKILL", cid, check=True)
    c.delete(cid)

    c.run(cid, workloads.counter(COUNT))
    c.assert_restored(cid, good)
    at_good = workloads.parse_counter(checkpoint.diff_member(good, COUNT).decode())
    uuid, values = c.wait_lines(cid, COUNT, len(at_good[1]) + 5, workloads.parse_counter)
    assert uuid == at_good[0]
    workloads.check_sequence(values, "the counter restored from the good checkpoint")
    assert not [x for x in c.checkpoints(cid) if x["state"] == "staging"], (
        f"the killed checkpoint's staging directory was not cleaned up: {c.checkpoints(cid)}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- symlinks out of the rootfs

@pytest.fixture
def host_canary():
    """A host directory no container may ever write to, and a snapshot of it."""
    path = f"/tmp/arch-host-canary-{secrets.token_hex(4)}"
    os.mkdir(path, 0o755)
    with open(os.path.join(path, "x"), "w") as f:
        f.write("host canary\n")
    os.mkdir(os.path.join(path, "sub"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def snapshot(path):
    out = {}
    for root, dirs, files in os.walk(path):
        for name in sorted(dirs + files):
            full = os.path.join(root, name)
            st = os.lstat(full)
            data = b""
            if os.path.isfile(full) and not os.path.islink(full):
                with open(full, "rb") as f:
                    data = f.read()
            out[os.path.relpath(full, path)] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns,
                                                hashlib.sha256(data).hexdigest())
    st = os.lstat(path)
    out["."] = (st.st_mode, st.st_mtime_ns)
    return out


def canary_image(c, workload_image, canary, target, tag):
    """The workload image with /data replaced by a symlink to `target`; imported into ctr."""
    out = os.path.join(os.path.dirname(workload_image.oci), f"canary-{tag}")
    os.makedirs(out, exist_ok=True)
    name = f"arch.test/canary-{tag}:1"
    entries = tuple(e for e in workloads.image_entries(workload_image.program) if e[0] != "data")
    entries += (("data", "symlink", b"", 0o777, target),)
    oci, _ = image.build_archives(out, name, extra=entries, stem="canary")
    c.env.ctr("images", "import", oci, check=True, timeout=120)
    return name


WRITER = ["sh", "-c", f"echo from-container > /data/x; mkdir -p /data/sub; "
                      f"echo from-container > /data/sub/y; echo new > /data/new-file; "
                      f"exec {workloads.IN_IMAGE} counter {COUNT}"]


@pytest.mark.parametrize("kind", ["absolute", "climbing"])
def test_restore_into_image_with_symlink_to_host_stays_in_rootfs(ctr_containers, workload_image,
                                                                 host_canary, kind):
    c, cid = ctr_containers, checkpoint.new_id(f"canary-{kind}")
    target = host_canary if kind == "absolute" else "../" * 12 + host_canary.lstrip("/")
    name = canary_image(c, workload_image, host_canary, target, kind)
    before = snapshot(host_canary)

    c.run(cid, WRITER)
    c.wait_lines(cid, COUNT, 10, workloads.parse_counter)
    ckpt = c.checkpoint(cid)["checkpoint"]
    assert c.delete(cid) == 137
    r = c.run(cid, WRITER, image=name, check=False)
    try:
        assert snapshot(host_canary) == before, (
            f"restoring {cid} wrote outside its rootfs, into {host_canary}\n"
            f"{c.diagnostics(cid, ckpt)}")
        assert r.returncode == 0, r.stderr
        c.wait_status(cid, "RUNNING")
        # Either outcome is fine as long as the user can tell which: restored (the
        # checkpoint's /data directory replaced the image's symlink inside the rootfs) or
        # moved aside with a reason and started fresh (writing through the symlink, which
        # inside the container resolves within its own root).
        states = [x["state"] for x in c.checkpoints(cid)]
        if states == ["committed"]:
            c.assert_restored(cid, ckpt)
            uuid, values = c.wait_lines(cid, COUNT, 15, workloads.parse_counter)
            assert uuid == checkpoint_uuid(ckpt)
            workloads.check_sequence(values)
        else:
            assert_moved_aside(c, cid)
    finally:
        c.remove(cid)
    assert snapshot(host_canary) == before, f"{host_canary} changed"


def tampered_diff(canary):
    """A rootfs diff that a hostile writer could produce: a symlink to the host followed by
    a file through it, a hardlink to a host file, a climbing member name."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name, kind, data=b"", target=""):
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.type = kind
            info.linkname = target
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        add("data", tarfile.DIRTYPE)
        add("data/escape", tarfile.SYMTYPE, target=canary)
        add("data/escape/pwned", tarfile.REGTYPE, b"pwned\n")
        add("data/escape/x", tarfile.REGTYPE, b"overwritten\n")
        add("data/hard", tarfile.LNKTYPE, target=canary + "/x")
        add("data/hard2", tarfile.LNKTYPE, target="../" * 12 + canary.lstrip("/") + "/x")
        add("../../../../../../../../../.." + canary + "/climbed", tarfile.REGTYPE, b"climbed\n")
    return buf.getvalue()


def test_tampered_rootfs_diff_cannot_reach_the_host(ctr_containers, host_canary):
    c, cid = ctr_containers, checkpoint.new_id("tampered")
    ckpt = run_counter_and_checkpoint(c, cid)
    old_uuid = checkpoint_uuid(ckpt)
    before = snapshot(host_canary)
    with open(os.path.join(ckpt, "rootfs-diff.tar"), "wb") as f:
        f.write(tampered_diff(host_canary))
    reseal_manifest(ckpt, ["rootfs-diff.tar"], c.node.keys)

    r = c.run(cid, workloads.counter(COUNT), check=False)
    try:
        assert snapshot(host_canary) == before, (
            f"restoring a tampered diff wrote into {host_canary}\n{c.diagnostics(cid, ckpt)}")
        assert r.returncode == 0, r.stderr
        reason = assert_moved_aside(c, cid)
        assert "apply" in reason, reason
        # Refused and moved aside: the container starts fresh, on a clean rootfs.
        assert_started_fresh(c, cid, old_uuid)
    finally:
        c.remove(cid)
    assert snapshot(host_canary) == before


# ---------------------------------------------------------------- full store

@pytest.fixture
def small_store(e2e_dir):
    """A 1 MiB tmpfs to checkpoint into (unmounted afterwards)."""
    path = os.path.join(e2e_dir, f"small-store-{secrets.token_hex(3)}")
    os.mkdir(path, 0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", path], check=True)
    yield path
    subprocess.run(["umount", path], capture_output=True)
    if not daemons.mounts_under(path):
        os.rmdir(path)


def test_full_store_fails_the_checkpoint_and_the_container_runs_on(small_store, ctr_containers):
    c, cid = ctr_containers, checkpoint.new_id("full")
    ticks = "/data/ticks.txt"
    c.run(cid, workloads.memory(ticks, "/data/sums.txt", mib=64),
          env=[f"ARCH_CHECKPOINT_HOST_PATH={small_store}"], store=small_store)
    c.wait_lines(cid, ticks, 3, workloads.parse_counter)

    r = c.archctl.run("container", "checkpoint", f"{c.ns}/{cid}", timeout=120)
    assert r.returncode != 0, f"a checkpoint into a 1 MiB store succeeded: {r.stdout}"
    assert "space" in r.stderr.lower(), f"the error does not say the store is full: {r.stderr}"

    assert c.status(cid) == "RUNNING", c.diagnostics(cid)
    _, values = c.wait_lines(cid, ticks, 1, workloads.parse_counter)
    _, later = c.wait_lines(cid, ticks, len(values) + 5, workloads.parse_counter)
    workloads.check_sequence(later, "the ticks after the failed checkpoint")
    assert not checkpoint.committed_dirs(small_store, c.ns, cid)
    listed = c.archctl.checkpoints(c.ns, cid)
    assert not [x for x in listed if x["state"] in ("committed", "verified")], listed
