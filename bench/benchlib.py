"""Shared pieces of the benchmarks: plain runc bundles, static C workloads, and the
headings and sections of bench/RESULTS.md."""

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
from archtest import daemons, image  # noqa: E402

RUNC = "/usr/sbin/runc"
RESULTS = os.path.join(REPO, "bench", "RESULTS.md")


@dataclasses.dataclass
class NodeConfig:
    """The fields archtest's Archd writes into a private archd's node config."""
    log_file: str
    runc: str
    criu: str
    store: str = ""
    state: str = ""
    keys: str = ""


def timed_output(argv, env=None, pass_fds=()):
    """Runs argv; (seconds, stdout). A non-zero exit raises with the end of its stderr."""
    start = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                       pass_fds=pass_fds)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.returncode}: {r.stderr[-2000:]}")
    return elapsed, r.stdout


@dataclasses.dataclass
class PrivateArch:
    """A private containerd whose runtime is arch-runc, with its own node config, keys,
    store and state under one work directory (not started)."""
    conf: str
    store: str
    env: dict
    ctd: object
    runc_root: str


def private_arch(workdir, runc, criu):
    etc = os.path.join(workdir, "etc")
    os.makedirs(etc, mode=0o755)
    store = os.path.join(workdir, "store")
    conf = os.path.join(etc, "arch.conf")
    keys, _ = daemons.make_key_dir(os.path.join(etc, "keys"))
    with open(conf, "w") as f:
        f.write(f"[runtime]\nrunc = {runc}\ncriu = {criu}\n"
                f"[log]\nlevel = info\nfile = {workdir}/arch.log\n"
                f"[store]\npath = {store}\n[state]\ndir = {workdir}/state\n"
                f"[keys]\ndir = {keys}\n")
    os.chmod(conf, 0o644)
    ctd = daemons.Containerd(os.path.join(workdir, "containerd"), env={"ARCH_CONFIG": conf})
    return PrivateArch(conf, store, dict(os.environ, ARCH_CONFIG=conf), ctd,
                       os.path.join(workdir, "runc-root"))


def run_heading():
    """The heading of one run in RESULTS.md: when, where, how many cores, which kernel."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"### {when}, {platform.node()}, {os.cpu_count()} cores, kernel {platform.release()}"


def add_to_results(heading, text):
    """Puts `text` (one run) first under `heading` in bench/RESULTS.md (heading added at the
    end when missing), so the newest run of each benchmark comes first."""
    with open(RESULTS) as f:
        doc = f.read()
    if heading not in doc:
        doc = doc.rstrip("\n") + "\n\n" + heading + "\n"
    head, _, rest = doc.partition(heading + "\n")
    with open(RESULTS, "w") as f:
        f.write(head + heading + "\n\n" + text.rstrip("\n") + "\n" + rest)


def compile_static(workdir, name, source):
    """Compiles C `source` into a static binary `<workdir>/<name>` and returns its path."""
    src, out = os.path.join(workdir, name + ".c"), os.path.join(workdir, name)
    with open(src, "w") as f:
        f.write(source)
    subprocess.run(["cc", "-O2", "-static", "-o", out, src], check=True)
    return out


def make_bundle(workdir, args, extra_files=None):
    """A runc bundle of the busybox test image running `args` without a terminal;
    `extra_files` maps host files to copy to paths in the rootfs."""
    bundle = os.path.join(workdir, "bundle")
    rootfs = os.path.join(bundle, "rootfs")
    os.makedirs(rootfs)
    layer = os.path.join(workdir, "layer.tar")
    with open(layer, "wb") as f:
        f.write(image.build_layer())
    subprocess.run(["tar", "-xf", layer, "-C", rootfs], check=True)
    for host, inside in (extra_files or {}).items():
        shutil.copy(host, os.path.join(rootfs, inside.lstrip("/")))
    subprocess.run([RUNC, "spec", "--bundle", bundle], check=True)
    with open(os.path.join(bundle, "config.json")) as f:
        spec = json.load(f)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = list(args)
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f)
    return bundle
