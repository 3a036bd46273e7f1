"""Builds a busybox test image and writes it as an OCI layout tar and a docker-archive tar.

One uncompressed layer (a deterministic tar of a busybox-static rootfs) is shared by
both formats.  The OCI tar holds `oci-layout`, `index.json` and `blobs/sha256/*`
(the form `ctr images import` reads, naming the image through the
`io.containerd.image.name` annotation); the docker-archive holds `manifest.json` with
`RepoTags`, the config as `<hex>.json` and the layer as `<hex>/layer.tar` (the form
Docker 20.10's `docker load` reads).
"""

import hashlib
import io
import json
import os
import tarfile

BUSYBOX = "/bin/busybox"
IMAGE_NAME = "arch.test/busybox:1"

# Applets the tests use (busybox-static provides them all).
APPLETS = (
    "sh ash echo sleep usleep cat env ls tty stty true false kill ps id hostname printf "
    "test [ wc head tail tr date mkdir rm mv touch seq yes sed grep awk expr pwd uname "
    "nc httpd ip"
).split()

_MTIME = 1_600_000_000


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _add(tar, name, kind, data=b"", mode=0o755, target=""):
    info = tarfile.TarInfo(name)
    info.mtime = _MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = mode
    if kind == "dir":
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = target
        info.mode = 0o777
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def build_layer(busybox=BUSYBOX, extra=()):
    """Returns the bytes of an uncompressed layer tar holding a busybox rootfs.

    `extra`: further entries, each a tuple of `_add`'s arguments after the tar:
    (name, kind, data=b"", mode=0o755, target="") with kind "dir", "file" or "symlink",
    added after the busybox entries (parents first).
    """
    with open(busybox, "rb") as f:
        busybox_bytes = f.read()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "dev", "etc", "proc", "root", "sys", "tmp", "var"):
            _add(tar, d, "dir", mode=0o1777 if d == "tmp" else 0o755)
        _add(tar, "bin/busybox", "file", busybox_bytes)
        for applet in sorted(APPLETS):
            _add(tar, "bin/" + applet, "symlink", target="busybox")
        _add(tar, "etc/passwd", "file", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        _add(tar, "etc/group", "file", b"root:x:0:\n", 0o644)
        for entry in extra:
            _add(tar, *entry)
    return buf.getvalue()


def _image_config(layer_digest, cmd=None):
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": "2020-09-13T12:26:40Z",
        "config": {
            "Env": ["PATH=/bin"],
            "Cmd": list(cmd or ["/bin/sh"]),
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_digest]},
        "history": [{"created": "2020-09-13T12:26:40Z", "created_by": "arch e2e image builder"}],
    }


def _json_bytes(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _add_file(tar, name, data):
    _add(tar, name, "file", data, mode=0o644)


def write_oci_archive(path, layer, name=IMAGE_NAME, cmd=None):
    """Writes an OCI image layout tar for `ctr images import` (`cmd`: the image's Cmd,
    default /bin/sh)."""
    layer_digest = _sha256(layer)
    config = _json_bytes(_image_config(layer_digest, cmd))
    manifest = _json_bytes({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + _sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": "sha256:" + layer_digest, "size": len(layer)}],
    })
    index = _json_bytes({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + _sha256(manifest), "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]},
        }],
    })
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_file(tar, "oci-layout", _json_bytes({"imageLayoutVersion": "1.0.0"}))
        _add(tar, "blobs", "dir")
        _add(tar, "blobs/sha256", "dir")
        for blob in (layer, config, manifest):
            _add_file(tar, "blobs/sha256/" + _sha256(blob), blob)
        _add_file(tar, "index.json", index)


def write_docker_archive(path, layer, name=IMAGE_NAME):
    """Writes a docker-archive tar (`docker save` format) for `docker load`."""
    layer_digest = _sha256(layer)
    config = _json_bytes(_image_config(layer_digest))
    config_name = _sha256(config) + ".json"
    layer_name = layer_digest + "/layer.tar"
    manifest = _json_bytes([{"Config": config_name, "RepoTags": [name], "Layers": [layer_name]}])
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_file(tar, config_name, config)
        _add(tar, layer_digest, "dir")
        _add_file(tar, layer_name, layer)
        _add_file(tar, "manifest.json", manifest)


def build_archives(out_dir, name=IMAGE_NAME, extra=(), stem="image"):
    """Writes `<out_dir>/<stem>-oci.tar` and `<out_dir>/<stem>-docker.tar`; returns both paths.

    `extra`: further layer entries (see build_layer)."""
    layer = build_layer(extra=extra)
    oci = os.path.join(out_dir, f"{stem}-oci.tar")
    docker = os.path.join(out_dir, f"{stem}-docker.tar")
    write_oci_archive(oci, layer, name)
    write_docker_archive(docker, layer, name)
    return oci, docker
