#!/usr/bin/python3
"""Regenerates the golden runtime command lines in this directory (run as root).

Starts a private containerd and dockerd (nothing else is touched), points them at a
logging wrapper runtime, drives the scenario in tests/e2e/archtest/capture.py and
writes the distinct normalised command lines to
  containerd-shim-runc-v2.txt   what containerd-shim-runc-v2 (containerd 1.6, via ctr) runs
  containerd-2-shim-runc-v2.txt the same for containerd 2.x (ARCH_E2E_ENGINES=forky; same lines
                                with containerd 2.1.9)
  dockerd.txt                   what it runs for dockerd 20.10 containers (`--runtime`)
Format: one argv per line, arguments separated by one space, sorted; see the
placeholders in archtest/capture.py.  tests/e2e/test_golden_capture.py checks them;
the C++ unit tests parse them.

  tests/golden/capture.py            rewrite the golden files
  tests/golden/capture.py --check    compare only; exit 1 when they differ
"""

import argparse
import os
import secrets
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))

from archtest import capture, daemons, image  # noqa: E402


def run(work):
    session = secrets.token_hex(3)
    ns = f"arch-capture-{session}"
    oci, docker_tar = image.build_archives(work)
    wrappers = {}
    for name in ("containerd", "dockerd"):
        wrappers[name] = (os.path.join(work, f"capture-{name}"),
                          os.path.join(work, f"{name}.calls"))
        capture.write_wrapper(*wrappers[name])
    ctd = daemons.Containerd(os.path.join(work, "containerd"))
    dockerd = daemons.Dockerd(os.path.join(work, "dockerd"), ctd,
                              {"capture": wrappers["dockerd"][0]}, f"arch-capture-docker-{session}")
    try:
        ctd.start()
        ctd.ctr("images", "import", oci, ns=ns, check=True, timeout=120)
        runc_root = os.path.join(work, "runc-root")
        os.makedirs(runc_root)
        capture.drive_containerd(ctd, ns, image.IMAGE_NAME, wrappers["containerd"][0], runc_root)
        dockerd.start()
        dockerd.cli("load", "-i", docker_tar, check=True, timeout=120)
        capture.drive_dockerd(dockerd, image.IMAGE_NAME, "capture")
    finally:
        dockerd.stop()
        ctd.stop()
        daemons.remove_cgroup_parent(ns)
    return {capture.GOLDEN_CONTAINERD: capture.shapes(wrappers["containerd"][1]),
            capture.GOLDEN_DOCKERD: capture.shapes(wrappers["dockerd"][1])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("capture.py: needs root (it runs containerd, dockerd and containers)")
    work = tempfile.mkdtemp(prefix="arch-capture-")  # mode 0700
    try:
        results = run(work)
    finally:
        if not daemons.mounts_under(work):
            shutil.rmtree(work, ignore_errors=True)
    status = 0
    for path, lines in results.items():
        if args.check:
            golden = capture.read_golden(path)
            if golden != lines:
                status = 1
                print(f"{path} differs:")
                for line in sorted(set(golden) - set(lines)):
                    print(f"  - {line}")
                for line in sorted(set(lines) - set(golden)):
                    print(f"  + {line}")
        else:
            capture.write_golden(path, lines)
            print(f"wrote {path} ({len(lines)} command lines)")
    return status


if __name__ == "__main__":
    sys.exit(main())
