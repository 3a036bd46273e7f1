"""One streaming pass from CRIU to the store ([jobs] stream_images = true): `criu dump
--stream` hands every image to archd's streamer, which stores it as AES-256-GCM chunks
(images/<name>.arch, no plaintext image file anywhere); the restore serves them back to
`criu restore --stream`, each chunk verified before CRIU reads it, the tree left stopped
until every image verified. Happy path: the job continues without gap or repeat and its
memory (a buffer filled with a known pattern, hashed by the job itself) is intact.
Attacks: a changed chunk is refused by its own authentication as CRIU reads it (checkpoint
kept, nothing restored runs); a truncated stream by the sealed manifest's size;
a changed chunk under a manifest re-sealed with the node key (as if the digest check were
bypassed) is refused by the chunk's own authentication and nothing restored runs; a chunk
from another checkpoint of the same job spliced in is refused the same way.
"""

import hashlib
import os
import sys
import time

import pytest

from archtest import proc, seal
from archtest.jobs import assert_consecutive, counts, pid_gone, wait_count
from test_jobs import nodes, workdir  # noqa: F401  (fixtures)

STREAM = "stream_images = true\n"

# Counts once per 50 ms into count.txt; holds 32 MiB filled with a pattern derived from its
# start, and writes the buffer's SHA-256 with each line: a restore that lost or changed a
# page shows a different digest.
MEM_JOB = r"""
import hashlib, os, sys, time
buf = bytearray(os.urandom(32)) * (1 << 20)
want = hashlib.sha256(buf).hexdigest()
n = 0
while True:
    with open("count.txt", "a") as f:
        f.write(f"{n} {hashlib.sha256(buf).hexdigest() == want}\n")
    n += 1
    time.sleep(0.05)
"""


def memory_ok(path):
    rows = [line.split() for line in open(path).read().splitlines() if line.strip()]
    return all(r[1] == "True" for r in rows if len(r) == 2)


def start(node, d):
    job_id = node.run_job(d, sys.executable, "-c", MEM_JOB, name="mem-job")
    count_file = os.path.join(d, "count.txt")
    wait_count(count_file, 10)
    return job_id, count_file


def checkpoint(node, job_id):
    before = node.job(job_id)
    out = node.checkpoint(job_id)
    assert out["job"]["state"] == "checkpointed", out
    proc.wait_until(lambda: pid_gone(before["pid"]), 10, "the dumped job to be gone")
    return out["checkpoint"], before


def sealed_images(ckpt):
    images = os.path.join(ckpt, "images")
    names = sorted(os.listdir(images))
    assert names and all(n.endswith(".img.arch") for n in names), names
    return images, names


def test_streamed_job_continues_with_memory_intact(nodes, workdir):  # noqa: F811
    node = nodes(STREAM)
    d, _ = workdir
    job_id, count_file = start(node, d)
    ckpt, before = checkpoint(node, job_id)

    manifest = seal.read_manifest(ckpt)
    assert manifest["encryption"]["format"] == "arch-image-stream-v1", manifest["encryption"]
    images, names = sealed_images(ckpt)
    # Encrypted at rest: the pages hold no run of the job's 32-byte pattern.
    pages = [n for n in names if n.startswith("pages-")]
    assert pages, names
    data = open(os.path.join(images, pages[0]), "rb").read()
    assert data.startswith(b"ARCHIMG1")
    assert max(data.count(bytes([b]) * 64) for b in range(256)) == 0
    stream = manifest["extra"]["image_stream"]
    assert stream["image_bytes"] >= 32 << 20, stream

    n = len(counts(count_file))
    restored = node.restore(job_id)
    assert restored["state"] == "running" and restored["pid"] == before["pid"], restored
    wait_count(count_file, n + 20)
    assert_consecutive(count_file, n + 20)
    assert memory_ok(count_file), open(count_file).read()[-500:]
    # The restore's scratch copy held no decrypted image.
    assert not any(f.endswith(".img") for _, _, fs in os.walk(node.store) for f in fs)


def tamper(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


def assert_refused(node, job_id, count_file, *words):
    n = len(counts(count_file))
    r = node.ctl("job", "restore", job_id, "-o", "json", check=False)
    assert r.returncode != 0, r.stdout
    text = (r.stdout + r.stderr).lower()
    for w in words:
        assert w in text, text
    time.sleep(0.5)  # nothing restored may write: give a wrongly continued job time to show
    assert len(counts(count_file)) == n, "a refused restore ran the job"
    return text


def test_changed_chunk_is_refused_and_the_checkpoint_kept(nodes, workdir):  # noqa: F811
    """The sealed manifest lists each stream's size; its contents are checked per chunk as
    CRIU reads them (one pass): the restore is refused, nothing restored runs, and the
    checkpoint stays where it is (a second attempt is refused the same way)."""
    node = nodes(STREAM)
    d, _ = workdir
    job_id, count_file = start(node, d)
    ckpt, _ = checkpoint(node, job_id)
    images, names = sealed_images(ckpt)
    pages = os.path.join(images, [n for n in names if n.startswith("pages-")][0])
    tamper(pages, os.path.getsize(pages) // 2)
    assert_refused(node, job_id, count_file, "does not verify")
    assert os.path.isdir(ckpt), "the checkpoint was not kept"
    assert_refused(node, job_id, count_file, "does not verify")
    # Truncated by one byte: the manifest's size refuses it before CRIU starts.
    with open(pages, "r+b") as f:
        f.truncate(os.path.getsize(pages) - 1)
    assert_refused(node, job_id, count_file)


def test_changed_chunk_under_a_resealed_manifest_is_refused_per_chunk(nodes, workdir):  # noqa: F811,E501
    node = nodes(STREAM)
    d, _ = workdir
    job_id, count_file = start(node, d)
    ckpt, _ = checkpoint(node, job_id)
    images, names = sealed_images(ckpt)
    rel = "images/" + [n for n in names if n.startswith("pages-")][0]
    path = os.path.join(ckpt, rel)
    tamper(path, os.path.getsize(path) - 100)  # in the final chunk
    manifest = seal.recompute_files(seal.read_manifest(ckpt), ckpt, [rel])
    seal.write_manifest(ckpt, seal.seal(manifest, *seal.read_key(node.archd.node.keys)))
    assert_refused(node, job_id, count_file, "does not verify")


def test_chunk_from_another_checkpoint_is_refused(nodes, workdir):  # noqa: F811
    node = nodes(STREAM + "")
    d, _ = workdir
    job_id, count_file = start(node, d)
    first = node.checkpoint(job_id, "--leave-running")["checkpoint"]
    wait_count(count_file, len(counts(count_file)) + 5)
    second, _ = checkpoint(node, job_id)
    _, names = sealed_images(second)
    # The same image name from the other checkpoint, with the manifest re-sealed to match.
    name = "inventory.img.arch"
    assert name in names
    rel = "images/" + name
    with open(os.path.join(first, rel), "rb") as src, open(os.path.join(second, rel), "wb") as dst:
        dst.write(src.read())
    manifest = seal.recompute_files(seal.read_manifest(second), second, [rel])
    seal.write_manifest(second, seal.seal(manifest, *seal.read_key(node.archd.node.keys)))
    assert_refused(node, job_id, count_file, "does not verify")


def stored_image_bytes(ckpt):
    images = os.path.join(ckpt, "images")
    return sum(os.path.getsize(os.path.join(images, n)) for n in os.listdir(images))


def test_compressed_stream_is_smaller_and_restores_intact(nodes, workdir):  # noqa: F811
    """stream_compression = zstd: the 32 MiB of repeated pattern is compressed before it is
    encrypted; the sealed images hold a fraction of what CRIU wrote; the restore decompresses
    each verified chunk and the job goes on with its memory intact."""
    node = nodes(STREAM + "stream_compression = zstd\n")
    d, _ = workdir
    job_id, count_file = start(node, d)
    ckpt, before = checkpoint(node, job_id)
    stream = seal.read_manifest(ckpt)["extra"]["image_stream"]
    assert stream["compression"] == "zstd", stream
    assert stream["compressed_chunks"] > 0, stream
    assert stream["image_bytes"] >= 32 << 20, stream
    stored = stored_image_bytes(ckpt)
    assert stored == stream["stored_bytes"], (stored, stream)
    assert stored < stream["image_bytes"] // 4, (stored, stream)
    _, names = sealed_images(ckpt)  # still sealed streams only

    n = len(counts(count_file))
    restored = node.restore(job_id)
    assert restored["state"] == "running" and restored["pid"] == before["pid"], restored
    wait_count(count_file, n + 20)
    assert_consecutive(count_file, n + 20)
    assert memory_ok(count_file), open(count_file).read()[-500:]


def test_compression_off_stores_every_chunk_raw(nodes, workdir):  # noqa: F811
    node = nodes(STREAM + "stream_compression = off\n")
    d, _ = workdir
    job_id, _ = start(node, d)
    ckpt, _ = checkpoint(node, job_id)
    stream = seal.read_manifest(ckpt)["extra"]["image_stream"]
    assert stream["compressed_chunks"] == 0, stream
    assert stored_image_bytes(ckpt) > stream["image_bytes"], stream


def test_plain_dump_is_unchanged_without_the_setting(nodes, workdir):  # noqa: F811
    node = nodes()
    d, _ = workdir
    job_id, _ = start(node, d)
    ckpt, _ = checkpoint(node, job_id)
    assert seal.read_manifest(ckpt).get("encryption") is None
    assert any(n.endswith(".img") for n in os.listdir(os.path.join(ckpt, "images")))
    assert hashlib  # the module's helpers stay importable
