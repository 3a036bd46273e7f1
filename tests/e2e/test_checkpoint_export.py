"""archctl checkpoint export / import: a container's checkpoint moved as one sealed archive
file, without a shared filesystem, and restored from it.

- Export writes the key's newest generation whose seal and files verify; import into a
  store that lost its copy adds it as the newest generation and the next container of the
  job resumes from it (counter without gap or repeat).
- Another node (its own store and key) accepts the archive only once it holds the
  exporting node's key (`archctl key export` / `key import`); the imported generation is
  sealed again with its own key and verifies there.
- Attacks: an archive resealed with a key the node does not hold, one whose files were
  changed, one that names another key than `--expect`, and a file that is not an archive
  are refused, and nothing is left in the store.
"""

import json
import os
import tempfile

import pytest

from archtest import checkpoint, daemons, seal
from test_sealed_checkpoints import (assert_resumed, checkpoint_job, rewrite_archive, run_with,
                                     stop)


@pytest.fixture
def moved(ctr_containers, tmp_path):
    """A job's checkpoint exported to an archive: (containers, job key, checkpoint dir,
    counter uuid, archive path)."""
    c = ctr_containers
    job = checkpoint.new_id("move")
    ckpt, uuid = checkpoint_job(c, checkpoint.new_id("exp"), job)
    archive = str(tmp_path / "move.tar.zst")
    out = c.archctl.json("checkpoint", "export", f"{c.ns}/{job}", archive)
    assert out["checkpoint"] == ckpt, out
    assert os.path.getsize(archive) == out["bytes"] > 0
    yield c, job, ckpt, uuid, archive
    checkpoint.remove_key(c.node.store, c.ns, job)


def other_node(c, directory):
    """An Archctl for a second node: its own store, state and key ([keys] dir)."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    path = daemons.write_node_config(
        os.path.join(directory, "etc"), os.path.join(directory, "arch.log"),
        criu=c.node.criu, store=os.path.join(directory, "store"),
        state=os.path.join(directory, "state"))
    return checkpoint.Archctl(c.archctl.path, path), os.path.join(directory, "store")


def store_entries(store):
    """Every path under a store directory (empty when it does not exist)."""
    out = []
    for root, dirs, files in os.walk(store):
        out += [os.path.join(root, n) for n in dirs + files]
    return out


def test_exported_checkpoint_imported_after_the_store_lost_it_resumes(moved):
    c, job, _, uuid, archive = moved
    checkpoint.remove_key(c.node.store, c.ns, job)  # the node lost its copy
    assert c.archctl.checkpoints(c.ns, job) == []
    out = c.archctl.json("checkpoint", "import", archive, "--expect", f"{c.ns}/{job}")
    assert (out["namespace"], out["key"]) == (c.ns, job), out
    assert [x["state"] for x in c.archctl.checkpoints(c.ns, job)] == ["committed"]
    cid = checkpoint.new_id("imp")
    run_with(c, cid, [f"ARCH_JOB_ID={job}"])
    assert_resumed(c, cid, out["checkpoint"], uuid)
    stop(c, cid)


def test_another_node_imports_only_with_the_exporting_nodes_key(moved, tmp_path):
    c, job, _, _, archive = moved
    b, b_store = other_node(c, str(tmp_path / "node-b"))
    r = b.run("checkpoint", "import", archive)
    assert r.returncode != 0 and "does not hold" in r.stderr and "key import" in r.stderr, (
        r.stdout, r.stderr)
    assert store_entries(b_store) == [], "a refused import left something in the store"
    # Node A's key, exported and imported on B: now B takes it and seals it as its own.
    key = c.archctl.run("key", "export")
    assert key.returncode == 0, key.stderr
    key_file = str(tmp_path / "a.key")
    with open(key_file, "w") as f:
        f.write(key.stdout)
    assert b.run("key", "import", key_file).returncode == 0
    out = b.json("checkpoint", "import", archive)
    listed = [x for x in b.json("checkpoint", "list", "--verify")
              if (x["namespace"], x["key"]) == (c.ns, job)]
    assert [x["state"] for x in listed] == ["verified"], listed
    assert seal.read_manifest(out["checkpoint"])["seal"]["key_id"] != \
        seal.read_manifest(moved[2])["seal"]["key_id"], "not sealed again with B's key"


def tamper_file(archive, out, name):
    """A copy of the archive with one byte of member `name` flipped (same size): the
    manifest and its seal are the exporter's, the file is not what they describe."""
    return seal.rewrite_archive(
        archive, out, lambda member, data: bytes([data[0] ^ 0xFF]) + data[1:]
        if member == name else data)


@pytest.mark.parametrize("case", ["foreign-seal", "changed-file", "other-key", "not-archive"])
def test_bad_archives_are_refused_and_leave_nothing(moved, tmp_path, case):
    c, job, _, _, archive = moved
    checkpoint.remove_key(c.node.store, c.ns, job)
    bad = str(tmp_path / f"{case}.tar.zst")
    args, why = [], None
    if case == "foreign-seal":
        foreign = seal.read_key(seal.foreign_key_dir(tempfile.mkdtemp(dir=str(tmp_path))))
        rewrite_archive(archive, bad, lambda doc: seal.seal(doc, *foreign))
        why = "does not hold"
    elif case == "changed-file":
        tamper_file(archive, bad, "rootfs-diff.tar")
        why = "does not verify"
    elif case == "other-key":
        bad = archive
        args, why = ["--expect", f"{c.ns}/someone-else"], "not of"
    else:
        with open(bad, "wb") as f:
            f.write(b"not a checkpoint archive\n" * 400)
        why = "not a readable archive"
    r = c.archctl.run("checkpoint", "import", bad, *args)
    assert r.returncode != 0, r.stdout
    assert why in r.stderr, r.stderr
    key_dir = checkpoint.store_key_dir(c.node.store, c.ns, job)
    left = [n for n in (os.listdir(key_dir) if os.path.isdir(key_dir) else []) if n != ".lock"]
    assert left == [], f"a refused import left {left} in {key_dir}"
    assert c.archctl.checkpoints(c.ns, job) == []


def test_export_needs_a_key_with_a_verified_checkpoint(ctr_containers, tmp_path):
    c = ctr_containers
    r = c.archctl.run("checkpoint", "export", f"{c.ns}/no-such-key",
                      str(tmp_path / "x.tar.zst"))
    assert r.returncode == 3 and "no checkpoint" in r.stderr, (r.returncode, r.stderr)
    assert not os.path.exists(tmp_path / "x.tar.zst")
    r = c.archctl.run("checkpoint", "export", "/etc/passwd", str(tmp_path / "y.tar.zst"))
    assert r.returncode == 2 and "NAMESPACE/KEY" in r.stderr, (r.returncode, r.stderr)
    # JSON errors under -o json go to stdout.
    r = c.archctl.run("checkpoint", "import", str(tmp_path / "missing.tar.zst"), "-o", "json")
    assert r.returncode != 0 and json.loads(r.stdout)["error"], r.stdout
