"""What CRIU can and cannot take, and what ARCH tells the user (containerd, ctr).

- File locks: a container holding an flock or a POSIX lock is checkpointed with it and
  restored holding it (another process's try fails); a restore after which a lock recorded
  at the checkpoint is not held again is refused and moved aside.
- Ghost files: a deleted-but-open file within the node's ghost limit round-trips with its
  content; one above the limit fails the dump with the mapped sentence.
- Failed dumps: the container keeps running, the error's first line is the mapped sentence,
  CRIU's log is kept (bounded) in failed-*/ and shown by `archctl checkpoint list` and
  `inspect --verbose`; at most [checkpoint] failed_dumps_kept of them per key.
- Attacks: a container's own CRIU configuration (the org.criu.config annotation runc hands
  to CRIU) is refused before any CRIU runs; the kept logs stay bounded.
- `archctl version` shows CRIU, the functional trial setup records, and the probes.
"""

import json
import os
import subprocess

import pytest

from archtest import checkpoint, daemons, proc, seal, workloads

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STATUS = "/data/status.txt"


def parse_status(text):
    """(start uuid, [(n, word)]) of a lock or ghost status file."""
    lines = workloads.complete_lines(text)
    if not lines or not lines[0].startswith("start "):
        raise AssertionError(f"status file does not begin with a start line: {text[:200]!r}")
    out = []
    for line in lines[1:]:
        n, _, word = line.partition(" ")
        out.append((int(n) if n.isdigit() else line, word))
    return lines[0].split(" ", 1)[1], out


def check_status(values, good, what):
    """Values numbered 1..N without gap or repeat, each with the word `good`."""
    workloads.check_sequence([n for n, _ in values], what)
    bad = [(n, w) for n, w in values if w != good]
    assert not bad, f"{what}: not {good!r} at {bad[:5]}"


def config_with(node, extra, directory):
    """A copy of the session's node config with `extra` appended (root-owned, 0644)."""
    with open(node.path) as f:
        text = f.read()
    os.makedirs(directory, mode=0o755, exist_ok=True)
    path = os.path.join(directory, "arch.conf")
    with open(path, "w") as f:
        f.write(text + "\n" + extra)
    os.chmod(path, 0o644)
    return path


def archctl_with(c, path):
    return checkpoint.Archctl(c.archctl.path, path)


def run_and_checkpoint(c, cid, argv, minimum=5):
    c.run(cid, argv)
    c.wait_lines(cid, STATUS, minimum, parse_status)
    out = c.checkpoint(cid)
    assert c.delete(cid) == 137
    return out["checkpoint"]


def failed_dirs(c, cid):
    key_dir = checkpoint.store_key_dir(c.node.store, c.ns, cid)
    try:
        names = sorted(os.listdir(key_dir))
    except FileNotFoundError:
        return []
    return [os.path.join(key_dir, n) for n in names if n.startswith("failed-")]


def assert_runs_on(c, cid, path, parse):
    """The container is still running and its file keeps growing."""
    assert c.status(cid) == "RUNNING", c.diagnostics(cid)
    _, values = c.wait_lines(cid, path, 1, parse)
    c.wait_lines(cid, path, len(values) + 3, parse)


# ---------------------------------------------------------------- file locks

@pytest.mark.parametrize("kind", ["flock", "posix"])
def test_lock_is_held_after_restore(ctr_containers, kind):
    c, cid = ctr_containers, checkpoint.new_id(f"lock-{kind}")
    argv = [workloads.IN_IMAGE, "lock", kind, "/data/lock", STATUS]
    ckpt = run_and_checkpoint(c, cid, argv)
    recorded = seal.read_manifest(ckpt)["extra"]["file_locks"]
    want = "FLOCK" if kind == "flock" else "POSIX"
    assert {"kind": want, "mode": "WRITE", "path": "/data/lock", "start": "0",
            "end": "EOF"} in recorded, recorded

    c.run(cid, argv)
    c.assert_restored(cid, ckpt)
    uuid, before = parse_status(c.read(cid, STATUS))
    _, values = c.wait_lines(cid, STATUS, len(before) + 5, parse_status)
    check_status(values, "held", "the restored lock holder")
    # Another process in the container cannot take the lock: the restored one holds it.
    r = c.exec(cid, workloads.IN_IMAGE, "trylock", kind, "/data/lock", check=False)
    assert r.returncode == 0 and r.stdout.strip() == "busy", (
        f"another process took the {kind} lock after the restore: {r.stdout} {r.stderr}")


def test_restore_is_refused_when_a_recorded_lock_is_not_held(ctr_containers, node_config):
    """The manifest (resealed by the node admin) records a lock the tasks never held: the
    check after the restore finds it missing, the generation is moved aside with the reason
    and the container starts fresh."""
    c, cid = ctr_containers, checkpoint.new_id("lockgone")
    argv = [workloads.IN_IMAGE, "lock", "flock", "/data/lock", STATUS]
    ckpt = run_and_checkpoint(c, cid, argv)
    old_uuid, _ = parse_status(checkpoint.diff_member(ckpt, STATUS).decode())
    doc = seal.read_manifest(ckpt)
    doc["extra"]["file_locks"].append(
        {"kind": "FLOCK", "mode": "WRITE", "path": "/data/never-locked", "start": "0",
         "end": "EOF"})
    seal.write_manifest(ckpt, seal.seal(doc, *seal.read_key(node_config.keys)))

    c.run(cid, argv)
    uuid, values = c.wait_lines(cid, STATUS, 3, parse_status)
    assert uuid != old_uuid, "the checkpoint was restored although a lock is not held"
    listed = c.checkpoints(cid)
    assert [x["state"] for x in listed] == ["failed"], listed
    assert "not held by the restored tasks" in listed[0]["reason"], listed[0]["reason"]
    assert "/data/never-locked" in listed[0]["reason"], listed[0]["reason"]


def test_lock_check_fails_the_create_with_policy_fail(ctr_containers, node_config):
    c, cid = ctr_containers, checkpoint.new_id("lockfail")
    argv = [workloads.IN_IMAGE, "lock", "posix", "/data/lock", STATUS]
    ckpt = run_and_checkpoint(c, cid, argv)
    doc = seal.read_manifest(ckpt)
    doc["extra"]["file_locks"][0]["path"] = "/data/another"
    seal.write_manifest(ckpt, seal.seal(doc, *seal.read_key(node_config.keys)))
    r = c.run(cid, argv, env=["ARCH_RESTORE_FAILURE=fail"], check=False)
    assert r.returncode != 0, f"the create should have failed: {r.stdout} {r.stderr}"
    assert "not held by the restored tasks" in r.stderr, r.stderr
    assert c.status(cid) != "RUNNING"


# ---------------------------------------------------------------- ghost files

def test_ghost_file_within_the_limit_round_trips(ctr_containers):
    c, cid = ctr_containers, checkpoint.new_id("ghost")
    argv = [workloads.IN_IMAGE, "ghost", "/data/ghost", "8", STATUS]
    ckpt = run_and_checkpoint(c, cid, argv)
    doc = seal.read_manifest(ckpt)
    ghosts = [f for f in doc["files"] if "ghost-file" in f["path"]]
    assert ghosts and sum(f["size"] for f in ghosts) >= 8 << 20, (
        f"the 8 MiB deleted file is not in the checkpoint's files: {ghosts}")
    assert doc["extra"]["ghost_limit"] == 64 << 20

    c.run(cid, argv)
    c.assert_restored(cid, ckpt)
    _, before = parse_status(c.read(cid, STATUS))
    _, values = c.wait_lines(cid, STATUS, len(before) + 5, parse_status)
    check_status(values, "ok", "the restored deleted file's content")


def test_ghost_file_above_the_limit_fails_with_the_sentence(ctr_containers, e2e_dir):
    c, cid = ctr_containers, checkpoint.new_id("ghostbig")
    small = archctl_with(c, config_with(c.node, "[checkpoint]\nghost_limit = 4M\n",
                                        os.path.join(e2e_dir, "etc-ghost4m")))
    c.run(cid, [workloads.IN_IMAGE, "ghost", "/data/ghost", "8", STATUS])
    c.wait_lines(cid, STATUS, 3, parse_status)
    r = small.run("container", "checkpoint", f"{c.ns}/{cid}")
    assert r.returncode != 0, r.stdout
    first = r.stderr.strip().splitlines()[0]
    assert "ghost-file limit" in first and "ghost_limit" in first, r.stderr
    # CRIU's own line is not in the sentence (it is kept in reason.txt, and --verbose shows it).
    assert "Can't dump ghost file" not in first, r.stderr
    assert "still running" in first, r.stderr
    assert_runs_on(c, cid, STATUS, parse_status)
    failed = failed_dirs(c, cid)
    assert len(failed) == 1, failed
    with open(os.path.join(failed[0], "dump-logs", "dump.log")) as f:
        assert "Can't dump ghost file" in f.read()
    # The images are gone: only the logs and the reason are kept.
    assert sorted(os.listdir(failed[0])) == ["dump-logs", "reason.txt"], os.listdir(failed[0])


# ---------------------------------------------------------------- failed dumps

def test_io_uring_dump_failure_is_explained_kept_and_listed(ctr_containers):
    with open("/proc/sys/kernel/io_uring_disabled") as f:
        if f.read().strip() != "0":
            pytest.skip("io_uring is disabled on this kernel")
    c, cid = ctr_containers, checkpoint.new_id("uring")
    count = "/data/count.txt"
    c.run(cid, [workloads.IN_IMAGE, "iouring", count])
    c.wait_lines(cid, count, 3, workloads.parse_counter)
    r = c.archctl.run("container", "checkpoint", f"{c.ns}/{cid}")
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, f"without --verbose only the sentence is shown: {r.stderr}"
    assert "io_uring" in lines[0] and "still running" in lines[0], r.stderr
    assert_runs_on(c, cid, count, workloads.parse_counter)

    listed = c.checkpoints(cid)
    assert [x["state"] for x in listed] == ["failed"], listed
    assert "io_uring" in listed[0]["reason"].splitlines()[0], listed[0]["reason"]
    failed = listed[0]["path"]
    inspect = c.archctl.run("checkpoint", "inspect", failed, "--verbose")
    assert inspect.returncode == 0, inspect.stderr
    assert "dump-logs/dump.log" in inspect.stdout, inspect.stdout
    assert "Error (" in inspect.stdout, f"--verbose shows no CRIU line: {inspect.stdout}"
    doc = c.archctl.json("checkpoint", "inspect", failed)
    assert doc["dump_logs"]["dump.log"]["criu_error_lines"], doc
    verbose = c.archctl.run("container", "checkpoint", f"{c.ns}/{cid}", "--verbose")
    assert verbose.returncode != 0
    assert "Error (" in verbose.stderr, f"--verbose shows no CRIU line: {verbose.stderr}"


def test_kept_failed_dumps_are_bounded_in_count_and_size(ctr_containers, e2e_dir):
    c, cid = ctr_containers, checkpoint.new_id("bounded")
    two = archctl_with(c, config_with(
        c.node, "[checkpoint]\nghost_limit = 1M\nfailed_dumps_kept = 2\n",
        os.path.join(e2e_dir, "etc-kept2")))
    c.run(cid, [workloads.IN_IMAGE, "ghost", "/data/ghost", "4", STATUS])
    c.wait_lines(cid, STATUS, 3, parse_status)
    for _ in range(4):
        assert two.run("container", "checkpoint", f"{c.ns}/{cid}").returncode != 0
    failed = failed_dirs(c, cid)
    assert len(failed) == 2, f"more failed dumps kept than failed_dumps_kept = 2: {failed}"
    for d in failed:
        total = sum(os.path.getsize(os.path.join(root, n))
                    for root, _, names in os.walk(d) for n in names)
        assert total <= (1 << 20) + 64 * 1024, f"{d} keeps {total} bytes"
    assert_runs_on(c, cid, STATUS, parse_status)


# ---------------------------------------------------------------- attacks

def test_container_cannot_choose_criu_options(ctr_containers, e2e_dir):
    """org.criu.config in the spec names a CRIU config file (here one inside the container's
    own rootfs raising the ghost limit): ARCH refuses to checkpoint before CRIU runs."""
    c, cid = ctr_containers, checkpoint.new_id("criuconf")
    argv = c.run_argv(cid, [workloads.IN_IMAGE, "ghost", "/data/ghost", "2", STATUS])
    at = argv.index("run") + 1
    conf = os.path.join(e2e_dir, "containerd", "tenant-criu.conf")
    argv[at:at] = ["--annotation", f"org.criu.config={conf}"]
    with open(conf, "w") as f:
        f.write("ghost-limit 1\n")
    c.created[cid] = c.node.store
    r = proc.run(argv, timeout=60)
    assert r.returncode == 0, r.stderr
    c.wait_status(cid, "RUNNING")
    c.wait_lines(cid, STATUS, 3, parse_status)
    r = c.archctl.run("container", "checkpoint", f"{c.ns}/{cid}")
    assert r.returncode != 0, "a container chose CRIU's configuration file"
    assert "org.criu.config" in r.stderr, r.stderr
    assert_runs_on(c, cid, STATUS, parse_status)
    assert not failed_dirs(c, cid), "CRIU ran: a failed dump was kept"
    assert not checkpoint.committed_dirs(c.node.store, c.ns, cid)


# ---------------------------------------------------------------- what archctl shows

def test_version_shows_criu_trial_and_probes(archctl_cli, node_config, e2e_dir):
    record = os.path.join(e2e_dir, "criu-trial", "trial.json")
    script = (f"source {REPO}/scripts/lib.sh; "
              f"criu_trial_record {node_config.criu} {record}")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300)
    with open(record) as f:
        doc = json.load(f)
    assert set(doc["checks"]) == {"listen", "established", "unix"}, doc
    conf = config_with(node_config, f"[runtime]\ncriu_trial = {record}\n",
                       os.path.join(e2e_dir, "etc-trial"))
    out = checkpoint.Archctl(archctl_cli.path, conf).run("version")
    assert node_config.criu in out.stdout, out.stdout
    assert "trial:" in out.stdout and "passed:" in out.stdout, out.stdout
    if r.returncode == 0:
        assert "passed: listening TCP, established TCP, unix socket pair" in out.stdout, out.stdout
    assert "dirty tracking (pre-copy)" in out.stdout and "lazy pages" in out.stdout, out.stdout

    # A record anyone could have written is not believed.
    os.chmod(record, 0o666)
    out = checkpoint.Archctl(archctl_cli.path, conf).run("version")
    assert "trial: none" in out.stdout and "ignored" in out.stdout, out.stdout
