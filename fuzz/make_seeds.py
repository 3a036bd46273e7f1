#!/usr/bin/env python3
"""Seed corpora for the fuzz targets: make_seeds.py REPO OUT writes OUT/<target>/seed-*."""
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

repo, out = sys.argv[1], sys.argv[2]


def seed(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def zstd(data):
    if not shutil.which("zstd"):
        return None
    return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, stdout=subprocess.PIPE,
                          check=True).stdout


spec = {
    "ociVersion": "1.1.0",
    "process": {"env": ["PATH=/usr/bin", "ARCH_ENABLE=1", "ARCH_JOB_ID=job-1",
                        "AWS_BATCH_JOB_ID=b-1", "ARCH_CHECKPOINT_HOST_PATH=/var/lib/x"]},
    "root": {"path": "rootfs"},
    "annotations": {"io.kubernetes.cri.sandbox-namespace": "team-a",
                    "io.kubernetes.cri.sandbox-name": "web-0",
                    "io.kubernetes.cri.container-name": "app"},
}
generated = dict(spec, annotations=dict(spec["annotations"],
                                        **{"io.kubernetes.cri.sandbox-name": "job-x7k2p"}))
generated["process"] = {"env": ["ARCH_ENABLE=true"]}
for i, s in enumerate([spec, generated, {"process": {}}, {}]):
    seed("oci_spec", f"spec{i}", json.dumps(s))
    seed("job_identity", f"spec{i}", "c0ffee\n" + json.dumps(s))

ecs = {"com.amazonaws.ecs.cluster": "prod",
       "com.amazonaws.ecs.task-definition-family": "web",
       "com.amazonaws.ecs.task-arn": "arn:aws:ecs:eu-west-1:1:task/prod/0123"}
for i, labels in enumerate([ecs, dict(ecs, **{"com.amazonaws.ecs.cluster":
                                              "arn:aws:ecs:eu-west-1:1:cluster/prod"}), {}]):
    seed("docker_labels", f"config{i}", json.dumps({"ID": "0" * 64, "Config": {"Labels": labels}}))

manifest = {
    "format_version": 1, "namespace": "default", "key": "k", "container_id": "c",
    "node": "n", "image": "", "created": "2026-01-01T00:00:00Z",
    "versions": {"arch": "0", "criu": "4", "runc": "1", "kernel": "6"},
    "timings_ms": {"dump": 1.5},
    "files": [{"path": "images/pages-1.img", "size": 3, "sha256": "0" * 64},
              {"path": "rootfs-diff.tar", "size": 0, "sha256": "e" * 64}],
    "extra": {"rootfs_diff": {"bytes": 3, "entries": 2, "file": "rootfs-diff.tar"}},
}
seed("manifest", "m0", json.dumps(manifest, indent=2))
seed("manifest", "m1", json.dumps(dict(manifest, files=[], extra=None)))

for golden in ("containerd-shim-runc-v2.txt", "dockerd.txt"):
    with open(os.path.join(repo, "tests", "golden", golden)) as f:
        for i, line in enumerate(f):
            line = line.strip().replace("<", "").replace(">", "")
            if line:
                seed("runc_command_line", f"{golden}-{i}", "\0".join(line.split()))


def tar_bytes(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data
                t.addfile(info)
            elif kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, data
                t.addfile(info)
            else:
                info.size = len(data)
                info.pax_headers = {"SCHILY.xattr.user.k": "v"} if name.endswith("x") else {}
                t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


diff = tar_bytes([("etc", "dir", None), ("etc/passwd", "file", b"root:x:0:0\n"),
                  ("etc/.wh.shadow", "file", b""), ("var", "dir", None),
                  ("var/.wh..wh..opq", "file", b""), ("var/link", "sym", "../etc/passwd"),
                  ("var/hard", "link", "etc/passwd"), ("var/x", "file", b"data")])
seed("rootfs_diff", "plain", diff)
if zstd(diff):
    seed("rootfs_diff", "zstd", zstd(diff))

files = {"images/pages-1.img": b"pages", "criu/dump.log": b"log"}
m = dict(manifest, namespace="jobs", files=[
    {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
    for p, d in sorted(files.items())])
archive = tar_bytes([("manifest.json", "file", json.dumps(m).encode())] +
                    [(p, "file", d) for p, d in sorted(files.items())] +
                    [("criu", "dir", None), ("images", "dir", None)])
seed("job_archive", "plain", archive)
if zstd(archive):
    seed("job_archive", "zstd", zstd(archive))

frames = [b"\x28\xb5\x2f\xfd\x20\x05\x29\x00\x00hello",
          b"\x50\x2a\x4d\x18\x03\x00\x00\x00abc" + b"\x28\xb5\x2f\xfd\x00\x68\x03\x00\x00z"]
for i, f in enumerate(frames):
    seed("zstd_frames", f"f{i}", f)
if zstd(diff):
    seed("zstd_frames", "diff", zstd(diff))

# seal: manifests with a seal by a key the target does not hold, and specs.
sealed = dict(manifest, format_version=2, encryption=None,
              seal={"alg": "HMAC-SHA256", "key_id": "0" * 16, "mac": "0" * 64})
seed("seal", "sealed", json.dumps(sealed))
seed("seal", "unsealed", json.dumps(manifest))
seed("seal", "spec", json.dumps(spec))
