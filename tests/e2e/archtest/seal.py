"""Manifest seals as ARCH writes them (store/seal.cc), for tests that play the node admin
(re-sealing a checkpoint damaged on purpose) or the attacker (recomputing a manifest
without the key, or with another node's key).

The MAC is HMAC-SHA256 with the node key over b"arch-manifest-seal-v1\\0" + key id +
b"\\0" + the manifest without "seal" as compact JSON with sorted keys.

Floating-point numbers keep the text ARCH wrote: nlohmann-json prints some doubles with
more digits than Python's shortest repr, so a manifest re-serialised by Python would not
be the bytes ARCH hashes (a reseal that fails now and then). read_manifest() keeps each
float's text in a marker string that canonical() and write_manifest() put back as is."""

import hashlib
import hmac
import io
import json
import os
import re
import subprocess
import tarfile

from . import daemons


_FLOAT = "\x00float:"
_FLOAT_JSON = re.compile(r'"\\u0000float:([-+.0-9eE]+)"')


def _dumps(doc, **kw):
    """json.dumps with the floats read_manifest() kept as text written back unchanged."""
    return _FLOAT_JSON.sub(r"\1", json.dumps(doc, **kw))


def canonical(doc):
    doc = {k: v for k, v in doc.items() if k != "seal"}
    return _dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def read_key(keys_dir, kid=None):
    """(id, secret bytes) of a key in a [keys] dir: `kid`, else the only/active one."""
    if kid is None:
        active = os.path.join(keys_dir, "active")
        if os.path.exists(active):
            with open(active) as f:
                kid = f.read().strip()
        else:
            kid = sorted(n[:-4] for n in os.listdir(keys_dir) if n.endswith(".key"))[0]
    with open(os.path.join(keys_dir, kid + ".key")) as f:
        return kid, bytes.fromhex(f.read().strip())


def seal(doc, kid, secret):
    """Sets doc["seal"] for the key (kid, secret); returns doc."""
    message = b"arch-manifest-seal-v1\0" + kid.encode() + b"\0" + canonical(doc).encode()
    doc["seal"] = {"alg": "HMAC-SHA256", "key_id": kid,
                   "mac": hmac.new(secret, message, hashlib.sha256).hexdigest()}
    return doc


def read_manifest(ckpt):
    """The manifest, its floats as marker strings holding their text (see above)."""
    with open(os.path.join(ckpt, "manifest.json")) as f:
        return json.load(f, parse_float=lambda text: _FLOAT + text)


def write_manifest(ckpt, doc):
    with open(os.path.join(ckpt, "manifest.json"), "w") as f:
        f.write(_dumps(doc, indent=2))


def recompute_files(doc, ckpt, rel_paths=None):
    """Updates size and sha256 of the listed files (all when None) from the disk."""
    for entry in doc["files"]:
        if rel_paths is not None and entry["path"] not in rel_paths:
            continue
        with open(os.path.join(ckpt, entry["path"]), "rb") as f:
            data = f.read()
        entry["size"] = len(data)
        entry["sha256"] = hashlib.sha256(data).hexdigest()
    return doc


def foreign_key_dir(path):
    """Another node's [keys] dir (a key this node does not hold)."""
    return daemons.make_key_dir(path)[0]


def rewrite_archive(archive, out, edit_member):
    """A copy of an exported checkpoint archive (pax tar, zstd) in which each regular
    member's data is replaced by edit_member(name, data); returns `out`."""
    raw = subprocess.run(["zstd", "-dc", archive], check=True, capture_output=True).stdout
    tar_path = out + ".tar"
    with tarfile.open(fileobj=io.BytesIO(raw)) as src, \
            tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if data is not None:
                data = edit_member(member.name, data)
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    subprocess.run(["zstd", "-q", "-f", "--rm", tar_path, "-o", out], check=True)
    return out

