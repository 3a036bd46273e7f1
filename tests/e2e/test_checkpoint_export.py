"""archctl checkpoint export / import: a container's checkpoint moved as one sealed archive
file, without a shared filesystem, and restored from it.

- Export writes the key's newest generation whose seal and files verify; import into a
  store that lost its copy adds it as the newest generation and the next container of the
  job resumes from it (counter without gap or repeat).
- Another node (its own store and key) accepts the archive only once it holds the
  exporting node's key (`archctl key export` / `key import`); the imported generation is
  sealed again with its own key and verifies there.
- The archive is laid out like Podman's and CRI-O's container checkpoint archives (CRIU
  images under checkpoint/, rootfs-diff.tar, deleted.files, config.dump, spec.dump,
  stats-dump, network.status) after ARCH's sealed manifest.json, and Debian forky's
  checkpointctl (scripts/install-test-engines.sh) shows it: container id, runtime, engine.
  An archive of the older layout (images/, nothing derived) still imports.
- Attacks: an archive resealed with a key the node does not hold, one whose files were
  changed, one that names another key than `--expect`, a file that is not an archive, one
  with an extra CRIU image the manifest does not list and one with an oversized derived
  entry are refused, and nothing is left in the store.
"""

import io
import json
import os
import re
import subprocess
import tarfile
import tempfile

import pytest

from archtest import checkpoint, daemons, seal, terminal
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


def read_members(archive):
    """[(TarInfo, data or None)] of an exported archive (pax tar, zstd), in order."""
    raw = subprocess.run(["zstd", "-dc", archive], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as src:
        return [(m, src.extractfile(m).read() if m.isfile() else None) for m in src.getmembers()]


def write_members(members, out):
    """An archive (pax tar, zstd) of [(TarInfo, data or None)]; returns `out`."""
    tar_path = out + ".tar"
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as dst:
        for member, data in members:
            if data is not None:
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    subprocess.run(["zstd", "-q", "-f", "--rm", tar_path, "-o", out], check=True)
    return out


def table_row(text):
    """{COLUMN: value} of the one-row table checkpointctl prints (columns cut where the
    header's names start: a value may be empty)."""
    lines = [line for line in text.splitlines() if line.strip()]
    header, row = lines[-3], lines[-1]
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    ends = starts[1:] + [None]
    return {header[a:b].strip().upper(): row[a:b].strip() for a, b in zip(starts, ends)}


CHECKPOINTCTL = os.path.join(daemons.FORKY_PREFIX, "bin", "checkpointctl")


def test_archive_is_laid_out_like_podmans_and_checkpointctl_shows_it(moved):
    c, job, ckpt, _, archive = moved
    members = read_members(archive)
    names = [m.name for m, _ in members]
    assert names[0] == "manifest.json", names[:5]
    data = {m.name: d for m, d in members if d is not None}
    for name in ("rootfs-diff.tar", "deleted.files", "config.dump", "spec.dump", "spec.json",
                 "stats-dump",
                 "network.status", "checkpoint/inventory.img", "checkpoint/pstree.img"):
        assert name in data, f"{name} missing from the archive: {names}"
    assert not [n for n in names if n == "images" or n.startswith("images/")], names
    manifest = seal.read_manifest(ckpt)
    config = json.loads(data["config.dump"])
    assert config["id"] == manifest["container_id"] and config["runtime"] == "arch-runc", config
    assert (config["archNamespace"], config["archKey"]) == (c.ns, job), config
    # spec.dump: the sealed spec.json (the container's config.json) plus the annotations
    # checkpointctl names a container by.
    spec = json.loads(data["spec.dump"])
    sealed_spec = json.loads(data["spec.json"])
    assert spec["process"] == sealed_spec["process"] and spec["root"] == sealed_spec["root"]
    notes = spec["annotations"]
    assert notes["io.kubernetes.cri.container-name"] == config["id"] == config["name"], notes
    assert (notes["org.arch.namespace"], notes["org.arch.key"]) == (c.ns, job), notes
    assert isinstance(json.loads(data["deleted.files"]), list)
    assert data["stats-dump"] == data["criu/stats-dump"]  # CRIU writes it in its work dir

    if not os.access(CHECKPOINTCTL, os.X_OK):
        pytest.skip(f"{CHECKPOINTCTL} missing (scripts/install-test-engines.sh installs it)")
    r = subprocess.run([CHECKPOINTCTL, "show", archive], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, f"checkpointctl show failed:\n{r.stdout}\n{r.stderr}"
    shown = table_row(r.stdout)
    assert shown.get("CONTAINER") == config["id"], (shown, r.stdout)
    assert shown.get("ID") == config["id"][:12], (shown, r.stdout)
    assert shown.get("RUNTIME") == "arch-runc" and shown.get("ENGINE") == "containerd", shown
    assert "CHKPT SIZE" in shown and "ROOT FS DIFF SIZE" in shown, shown
    # Its CRIU images are real ones: checkpointctl reads the process tree from them.
    r = subprocess.run([CHECKPOINTCTL, "inspect", "--ps-tree", archive], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, f"checkpointctl inspect failed:\n{r.stdout}\n{r.stderr}"
    assert "archtest" in r.stdout or "sh" in r.stdout, r.stdout


def test_an_archive_of_the_older_layout_still_imports(moved, tmp_path):
    """images/ instead of checkpoint/, and nothing derived: what export wrote before."""
    c, job, _, uuid, archive = moved
    older = []
    for member, data in read_members(archive):
        if member.name in ("config.dump", "deleted.files", "network.status", "stats-dump"):
            continue
        if member.name == "checkpoint" or member.name.startswith("checkpoint/"):
            member.name = "images" + member.name[len("checkpoint"):]
        older.append((member, data))
    old_archive = write_members(older, str(tmp_path / "older.tar.zst"))
    checkpoint.remove_key(c.node.store, c.ns, job)
    out = c.archctl.json("checkpoint", "import", old_archive, "--expect", f"{c.ns}/{job}")
    assert [x["state"] for x in c.archctl.checkpoints(c.ns, job)] == ["committed"], out
    cid = checkpoint.new_id("old")
    run_with(c, cid, [f"ARCH_JOB_ID={job}"])
    assert_resumed(c, cid, out["checkpoint"], uuid)
    stop(c, cid)


@pytest.mark.parametrize("case", ["foreign-seal", "changed-file", "other-key", "not-archive",
                                  "extra-image", "big-derived"])
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
    elif case in ("extra-image", "big-derived"):
        members = read_members(archive)
        if case == "extra-image":
            # A CRIU image the sealed manifest does not list (e.g. planted pages).
            extra = tarfile.TarInfo("checkpoint/pages-99.img")
            extra.mode = 0o600
            members.insert(1, (extra, b"\0" * 4096))
            why = "not in the manifest"
        else:
            # A derived entry is skipped at import, but only a small one.
            members = [(m, b" " * (5 << 20) if m.name == "config.dump" else d)
                       for m, d in members]
            why = "not a small regular file"
        write_members(members, bad)
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


def on_a_terminal(c, *args):
    """archctl `args` with stderr on a pseudo-terminal (an operator's shell): (exit code,
    what the terminal showed, stdout)."""
    return terminal.run_on_terminal(c.archctl.argv(*args), env=c.archctl.env(), timeout=120)[:3]


def test_export_and_import_show_their_bytes_on_a_terminal_only(moved, tmp_path):
    """On a terminal, export and import draw a progress line that ends at 100%; with -q, or
    when stderr is not a terminal (every other test here), nothing but the result."""
    c, job, _, _, archive = moved
    again = str(tmp_path / "again.tar.zst")
    code, shown, out = on_a_terminal(c, "checkpoint", "export", f"{c.ns}/{job}", again)
    assert code == 0, shown
    assert re.search(r"export: \d+ / \d+ MiB \(100%\)", shown), repr(shown)
    assert "exported" in out and "MiB (" not in out, "progress went to stdout"
    code, shown, _ = on_a_terminal(c, "checkpoint", "export", "-q", f"{c.ns}/{job}",
                                   str(tmp_path / "quiet.tar.zst"))
    assert code == 0 and "export:" not in shown, repr(shown)
    checkpoint.remove_key(c.node.store, c.ns, job)
    code, shown, _ = on_a_terminal(c, "checkpoint", "import", again)
    assert code == 0, shown
    assert re.search(r"import: \d+ / \d+ MiB \(100%\)", shown), repr(shown)
    r = c.archctl.run("checkpoint", "export", f"{c.ns}/{job}", str(tmp_path / "piped.tar.zst"))
    assert r.returncode == 0 and "export:" not in r.stderr, r.stderr
