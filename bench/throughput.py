#!/usr/bin/env python3
"""Checkpoint throughput against the disk's own sequential write rate, measured in the same
run on the same filesystem as the checkpoint store:

  disk        write N MiB to a file in the store's directory, then fdatasync (twice: before
              and after the checkpoints; the better one is the physical limit used).
  memory      `archctl container checkpoint` of a container holding --mib MiB of dirty
              memory (rootfs compression off): bytes committed / wall time, and the phases.
  rootfs      a container that wrote --rootfs-mib MiB into its rootfs, checkpointed with the
              rootfs diff plain and zstd (level --level): the rootfs phase's rate and size,
              for incompressible (urandom) and compressible (text) data.
  pages+zstd  zstd -T0 over the memory checkpoint's CRIU page images: would compressing them
              pay (compressed rate against the disk rate)?

Prints a markdown table and, unless --no-write, adds it to bench/RESULTS.md under
"Checkpoint throughput against the disk". Run as root after building:
    bench/throughput.py [--mib 1024] [--rootfs-mib 512] [--level 3]
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from finalize_scale import REPO, Node  # noqa: E402
import benchlib  # noqa: E402

from archtest import daemons, proc, workloads  # noqa: E402

HEADING = "## Checkpoint throughput against the disk (bench/throughput.py)"
MB = 1e6


def disk_rate(directory, mib):
    """MB/s of writing `mib` MiB sequentially (1 MiB writes) and fdatasync."""
    path = os.path.join(directory, "disk-probe")
    block = os.urandom(1 << 20)
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(mib):
            os.write(fd, block)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    os.unlink(path)
    return mib * (1 << 20) / elapsed / MB


def manifest_bytes(ckpt, prefix=""):
    with open(os.path.join(ckpt, "manifest.json")) as f:
        files = json.load(f)["files"]
    return sum(x["size"] for x in files if x["path"].startswith(prefix))


def checkpoint(node, archctl, conf, ns, cid):
    start = time.perf_counter()
    r = subprocess.run([archctl, "container", "checkpoint", f"{ns}/{cid}", "-o", "json"],
                       capture_output=True, text=True, env=dict(os.environ, ARCH_CONFIG=conf))
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise RuntimeError(f"checkpoint {cid}: {r.stderr[-2000:]}")
    return elapsed, json.loads(r.stdout)


def zstd_conf(node, level):
    directory = os.path.join(node.workdir, "etc-zstd")
    path = daemons.write_node_config(directory, os.path.join(node.workdir, "arch.log"),
                                     level="info", criu="/opt/arch/criu/bin/criu",
                                     store=node.store, state=node.state)
    with open(path, "a") as f:
        f.write(f"[checkpoint]\nrootfs_compression = zstd\nzstd_level = {level}\n")
    return path


def bench_memory(node, archctl, mib):
    ns = node.new_namespace("tp-mem")
    cid = "mem"
    try:
        node.run(ns, cid, workloads.memory("/data/ticks.txt", "/data/sums.txt", mib=mib, ms=1000),
                 arch=True)
        ticks = os.path.join(node.rootfs(ns, cid), "data/ticks.txt")
        proc.wait_until(lambda: os.path.exists(ticks) and os.path.getsize(ticks) > 0, 300,
                        "the memory workload to fill its memory", interval=0.1)
        wall, out = checkpoint(node, archctl, node.conf, ns, cid)
        ckpt = out["checkpoint"]
        total = manifest_bytes(ckpt)
        pages = sorted(glob.glob(os.path.join(ckpt, "images", "pages-*.img")))
        pages_copy = os.path.join(node.workdir, "pages.img")
        with open(pages_copy, "wb") as dst:  # kept for the zstd estimate below
            for p in pages:
                with open(p, "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
        return {"wall": wall, "bytes": total, "timings": out["timings_ms"], "pages": pages_copy}
    finally:
        node.remove(ns, [cid])


def bench_rootfs(node, archctl, mib, level):
    rows = []
    zconf = zstd_conf(node, level)
    kinds = {"urandom": f"head -c {mib}m /dev/urandom > /data/blob",
             "text": f"yes 'arch checkpoint rootfs line' | head -c {mib}m > /data/blob"}
    for kind, fill in kinds.items():
        for compression, conf in (("none", node.conf), (f"zstd -{level}", zconf)):
            ns = node.new_namespace(f"tp-rootfs-{kind}-{compression.split()[0]}")
            cid = "blob"
            try:
                node.run(ns, cid, ["sh", "-c", f"{fill}; touch /data/ready; exec sleep 100000"],
                         arch=True)
                ready = os.path.join(node.rootfs(ns, cid), "data/ready")
                proc.wait_until(lambda: os.path.exists(ready), 300, "the blob to be written",
                                interval=0.1)
                wall, out = checkpoint(node, archctl, conf, ns, cid)
                size = manifest_bytes(out["checkpoint"], "rootfs-diff.tar")
                rows.append({"kind": kind, "compression": compression, "wall": wall,
                             "rootfs_ms": out["timings_ms"].get("rootfs", 0),
                             "commit_ms": out["timings_ms"].get("commit", 0), "size": size})
            finally:
                node.remove(ns, [cid])
    return rows


def zstd_pages(pages, level):
    size = os.path.getsize(pages)
    out = pages + ".zst"
    start = time.perf_counter()
    subprocess.run(["zstd", "-q", "-f", "-T0", f"-{level}", pages, "-o", out], check=True)
    elapsed = time.perf_counter() - start
    packed = os.path.getsize(out)
    os.unlink(out)
    return size, packed, elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="dirty memory of the container")
    parser.add_argument("--rootfs-mib", type=int, default=512)
    parser.add_argument("--level", type=int, default=3, help="zstd level for the rootfs runs")
    parser.add_argument("--archctl", default=os.path.join(REPO, "build/src/cli/archctl"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    load_before = open("/proc/loadavg").read().strip()
    workdir = tempfile.mkdtemp(prefix="arch-throughput-")
    os.chmod(workdir, 0o755)
    node = None
    try:
        program = workloads.compile_program(workdir)
        node = Node(workdir, workloads.build_image(workdir, program))
        node.start()
        os.makedirs(node.store, exist_ok=True)
        disk = [disk_rate(node.workdir, args.mib)]
        mem = bench_memory(node, args.archctl, args.mib)
        print(f"memory: {mem['bytes'] / MB:.0f} MB in {mem['wall']:.2f} s "
              f"({mem['bytes'] / mem['wall'] / MB:.0f} MB/s) {mem['timings']}", flush=True)
        pages = [zstd_pages(mem["pages"], lvl) for lvl in (1, 3)]
        os.unlink(mem["pages"])
        rootfs = bench_rootfs(node, args.archctl, args.rootfs_mib, args.level)
        disk.append(disk_rate(node.workdir, args.mib))
    finally:
        if node:
            node.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    limit = max(disk)
    load_after = open("/proc/loadavg").read().strip()
    t = mem["timings"]
    rate = mem["bytes"] / mem["wall"] / MB
    lines = [benchlib.run_heading(),
             f"`bench/throughput.py {' '.join(sys.argv[1:])}`".replace(" `", "`") +
             f"; loadavg before: {load_before}; after: {load_after}", "",
             "| measurement | bytes | time | rate | vs disk |", "|---|---|---|---|---|",
             f"| disk: sequential write + fdatasync, {args.mib} MiB (before / after) | "
             f"{args.mib} MiB | | {disk[0]:.0f} / {disk[1]:.0f} MB/s | 1.00 (limit {limit:.0f}) |",
             f"| ARCH checkpoint, {args.mib} MiB dirty memory, compression off (archctl wall) | "
             f"{mem['bytes'] / MB:.0f} MB | {mem['wall']:.2f} s | {rate:.0f} MB/s | "
             f"{rate / limit:.2f} |",
             f"| of which: freeze {t.get('freeze', 0):.0f} ms, rootfs {t.get('rootfs', 0):.0f} ms, "
             f"CRIU dump {t.get('dump', 0):.0f} ms, commit (SHA-256 + fsync) "
             f"{t.get('commit', 0):.0f} ms, end {t.get('end', 0):.0f} ms | | | | |"]
    for level, (size, packed, secs) in zip((1, 3), pages):
        r = size / secs / MB
        lines.append(f"| zstd -T0 -{level} over the CRIU page images (estimate) | "
                     f"{size / MB:.0f} -> {packed / MB:.0f} MB | {secs:.2f} s | {r:.0f} MB/s in | "
                     f"{r / limit:.2f} |")
    for row in rootfs:
        r = args.rootfs_mib * (1 << 20) / (row["rootfs_ms"] / 1000) / MB
        lines.append(f"| rootfs diff, {args.rootfs_mib} MiB {row['kind']}, {row['compression']} "
                     f"(rootfs phase; commit {row['commit_ms']:.0f} ms) | "
                     f"{row['size'] / MB:.0f} MB | {row['rootfs_ms'] / 1000:.2f} s | "
                     f"{r:.0f} MB/s in | {r / limit:.2f} |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if not args.no_write:
        benchlib.add_to_results(HEADING, text)


if __name__ == "__main__":
    main()
