#!/usr/bin/env python3
"""Builds (and caches) the real-workload test image: Debian 12 with real programs from Debian packages.

No registry is involved: `debootstrap --variant=minbase` writes a bookworm rootfs from the
Debian mirror, `apt-get install` (chrooted, inside a private mount namespace so the /proc it
needs is never left mounted, with a policy-rc.d so no service starts) adds PACKAGES, and the
rootfs is packed as one uncompressed layer into an OCI layout tar (`ctr images import`,
`podman load`) and a docker-archive tar (`docker load`), written the way image.py writes the
busybox image.

The result is cached under CACHE_ROOT/<key>/ where key = sha256(package list + this file),
so a second run (or the test session after setup built it in the background) only checks
that the cache entry is complete. Builders of the same key serialise on a lock file, so
setup's background build and a test session that starts early never build twice.

Command line (as root):
  realimage.py build    build unless cached; print the cache directory
  realimage.py path     print the cache directory if cached, else exit 1
"""

import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

IMAGE_NAME = "arch.test/real:1"
SUITE = "bookworm"
MIRROR = os.environ.get("ARCH_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE_ROOT = os.environ.get("ARCH_TEST_CACHE", "/var/cache/arch-test")

# The real programs (issue 13 item 8). iproute2: the tests read the interfaces' state.
PACKAGES = (
    "redis-server", "redis-tools", "nginx-light", "python3", "python3-numpy", "nodejs",
    "default-jre-headless", "sqlite3", "procps", "util-linux", "fio", "iproute2",
)

OCI_NAME = "image-oci.tar"
DOCKER_NAME = "image-docker.tar"
DONE_NAME = "done.json"
_MTIME = 1_600_000_000
_CHUNK = 1 << 20


def cache_key(packages=PACKAGES):
    h = hashlib.sha256()
    h.update(("\n".join(sorted(packages)) + f"\n{SUITE}\n").encode())
    with open(os.path.abspath(__file__), "rb") as f:
        h.update(f.read())
    return h.hexdigest()[:16]


def cache_dir(packages=PACKAGES):
    return os.path.join(CACHE_ROOT, "realimage-" + cache_key(packages))


def cached(packages=PACKAGES):
    """The cache directory when it holds a complete image, else None."""
    d = cache_dir(packages)
    ok = all(os.path.isfile(os.path.join(d, n)) for n in (OCI_NAME, DOCKER_NAME, DONE_NAME))
    return d if ok else None


def oci_archive(d):
    return os.path.join(d, OCI_NAME)


def docker_archive(d):
    return os.path.join(d, DOCKER_NAME)


# ------------------------------------------------------------------ rootfs

def _log(msg):
    print(f"[realimage {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _run(argv, **kw):
    _log("$ " + " ".join(argv))
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, **kw)


def build_rootfs(root, packages):
    _run(["debootstrap", "--variant=minbase", SUITE, root, MIRROR],
         stdout=subprocess.DEVNULL)
    # No service may start while packages install (redis and nginx would).
    policy = os.path.join(root, "usr/sbin/policy-rc.d")
    with open(policy, "w") as f:
        f.write("#!/bin/sh\nexit 101\n")
    os.chmod(policy, 0o755)
    shutil.copyfile("/etc/resolv.conf", os.path.join(root, "etc/resolv.conf"))
    script = (
        'set -e; mount -t proc proc "$1/proc"; '
        'chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get -q update; '
        'shift; chroot "$R" env DEBIAN_FRONTEND=noninteractive apt-get -q -y '
        '--no-install-recommends install "$@"; '
        'chroot "$R" apt-get clean')
    # A private mount namespace: the /proc mounted for the chroot dies with it.
    _run(["unshare", "--mount", "--propagation", "private", "env", f"R={root}",
          "sh", "-c", script, "sh", root, *packages], stdout=subprocess.DEVNULL)
    os.remove(policy)
    for rel in ("var/lib/apt/lists", "var/cache/apt", "var/log", "tmp"):
        path = os.path.join(root, rel)
        for name in os.listdir(path):
            p = os.path.join(path, name)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.remove(p)
    with open(os.path.join(root, "etc/resolv.conf"), "w") as f:
        f.write("")


def pack_layer(root, out):
    """A tar of the rootfs (numeric owners, xattrs, no device nodes or /proc, /sys content)."""
    _run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--sort=name",
          f"--mtime=@{_MTIME}", "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
          "-C", root, "-cf", out, "."])


# ------------------------------------------------------------------ archives

def _file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _json_bytes(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.mtime, info.mode, info.size = _MTIME, 0o644, len(data)
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar, name):
    info = tarfile.TarInfo(name)
    info.mtime, info.mode, info.type = _MTIME, 0o755, tarfile.DIRTYPE
    tar.addfile(info)


def _add_path(tar, name, path):
    info = tarfile.TarInfo(name)
    info.mtime, info.mode, info.size = _MTIME, 0o644, os.path.getsize(path)
    with open(path, "rb") as f:
        tar.addfile(info, f)


def _config(layer_digest):
    return _json_bytes({
        "architecture": "amd64", "os": "linux", "created": "2020-09-13T12:26:40Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["/bin/bash"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_digest]},
        "history": [{"created": "2020-09-13T12:26:40Z",
                     "created_by": "arch realimage.py: debootstrap " + SUITE}],
    })


def write_archives(layer, out_dir, name=IMAGE_NAME):
    digest, size = _file_sha256(layer), os.path.getsize(layer)
    config = _config(digest)
    manifest = _json_bytes({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + _sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": "sha256:" + digest, "size": size}],
    })
    index = _json_bytes({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + _sha256(manifest), "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]},
        }],
    })
    with tarfile.open(os.path.join(out_dir, OCI_NAME), "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", _json_bytes({"imageLayoutVersion": "1.0.0"}))
        _add_dir(tar, "blobs")
        _add_dir(tar, "blobs/sha256")
        _add_path(tar, "blobs/sha256/" + digest, layer)
        _add_bytes(tar, "blobs/sha256/" + _sha256(config), config)
        _add_bytes(tar, "blobs/sha256/" + _sha256(manifest), manifest)
        _add_bytes(tar, "index.json", index)
    docker_manifest = _json_bytes([{"Config": _sha256(config) + ".json", "RepoTags": [name],
                                    "Layers": [digest + "/layer.tar"]}])
    with tarfile.open(os.path.join(out_dir, DOCKER_NAME), "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, _sha256(config) + ".json", config)
        _add_dir(tar, digest)
        _add_path(tar, digest + "/layer.tar", layer)
        _add_bytes(tar, "manifest.json", docker_manifest)
    return size


# ------------------------------------------------------------------ build with cache

def build(packages=PACKAGES):
    """Returns the cache directory holding the image, building it first when needed."""
    done = cached(packages)
    if done:
        return done
    os.makedirs(CACHE_ROOT, mode=0o700, exist_ok=True)
    d = cache_dir(packages)
    lock_fd = os.open(d + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        done = cached(packages)  # another builder finished while we waited
        if done:
            return done
        start = time.monotonic()
        shutil.rmtree(d, ignore_errors=True)
        # Named by the key: what a killed builder left is removed by the next one (under
        # the same lock), never by a builder of another key.
        work = os.path.join(CACHE_ROOT, "build-" + cache_key(packages))
        shutil.rmtree(work, ignore_errors=True)
        os.mkdir(work, 0o700)
        try:
            root = os.path.join(work, "rootfs")
            build_rootfs(root, packages)
            layer = os.path.join(work, "layer.tar")
            pack_layer(root, layer)
            shutil.rmtree(root)
            out = os.path.join(work, "out")
            os.mkdir(out)
            size = write_archives(layer, out)
            seconds = round(time.monotonic() - start, 1)
            with open(os.path.join(out, DONE_NAME), "w") as f:
                json.dump({"packages": sorted(packages), "layer_bytes": size,
                           "build_seconds": seconds, "image": IMAGE_NAME}, f)
            os.rename(out, d)
            _log(f"built {IMAGE_NAME} in {seconds} s (layer {size >> 20} MiB): {d}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return d
    finally:
        os.close(lock_fd)


def main(argv):
    if len(argv) != 2 or argv[1] not in ("build", "path"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[1] == "path":
        d = cached()
        if not d:
            return 1
        print(d)
        return 0
    if os.geteuid() != 0:
        print("realimage.py build: must run as root (debootstrap, chroot)", file=sys.stderr)
        return 1
    print(build())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
