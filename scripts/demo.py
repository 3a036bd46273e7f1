#!/usr/bin/env python3
"""The ARCH demo: a counter container run by containerd through arch-runc.

Starts a private containerd (its own root, state and socket under a temporary
directory; the host's containerd, if any, is not touched), imports a locally built
busybox image, runs an ARCH-enabled counter container with `ctr run --runc-binary
/usr/local/bin/arch-runc`, shows it counting and what arch-runc logged, then removes
everything it started.

This version of ARCH passes every runtime call through to runc and recognises
ARCH-enabled containers; checkpoint and automatic restore come in the next release, and
this demo will then show the counter continuing after its container was removed and
created again.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
from archtest import daemons, image, proc  # noqa: E402

ARCH_RUNC = os.environ.get("ARCH_RUNC", "/usr/local/bin/arch-runc")
NS = "arch-demo"


def say(text):
    print(f"\n== {text}", flush=True)


def show(argv, **kw):
    print("$ " + " ".join(argv), flush=True)
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    out = (r.stdout + r.stderr).rstrip()
    if out:
        print(out, flush=True)
    return r


def main():
    if os.geteuid() != 0:
        sys.exit("run as root: the demo starts containerd and runs containers")
    base = tempfile.mkdtemp(prefix="arch-demo-")
    os.chmod(base, 0o700)
    ctd = daemons.Containerd(os.path.join(base, "containerd"))
    cid = "counter"
    try:
        say("arch-runc and archctl are installed")
        show([ARCH_RUNC, "--version"])
        show(["archctl", "version"])

        say("a private containerd, and a busybox image built here (no registry needed)")
        ctd.start()
        archives = image.build_archives(base)
        show(ctd.ctr_argv("images", "import", archives[0], ns=NS))

        say("an ARCH-enabled counter container, run by containerd through arch-runc")
        counter = ("i=0; while true; do i=$((i+1)); echo $i > /count; "
                   "echo \"count $i\"; sleep 0.5; done")
        show(ctd.ctr_argv("run", "-d", "--runc-binary", ARCH_RUNC, "--env", "ARCH_ENABLE=1",
                          image.IMAGE_NAME, cid, "sh", "-c", counter, ns=NS))
        ctd.wait_status(NS, cid, "RUNNING")
        show(ctd.ctr_argv("task", "ls", ns=NS))
        time.sleep(2)
        show(ctd.ctr_argv("task", "exec", "--exec-id", "peek", cid, "cat", "/count", ns=NS))

        say("what arch-runc logged into the task's runc log (containerd's log.json)")
        log_json = os.path.join(ctd.task_dir(NS), cid, "log.json")
        with open(log_json) as f:
            for line in f:
                if "arch-runc" in line:
                    print(line.rstrip())

        say("stopping the container (SIGKILL through arch-runc; the exit status 137 comes from runc)")
        show(ctd.ctr_argv("task", "kill", "-s", "SIGKILL", cid, ns=NS))
        proc.wait_until(lambda: ctd.task_status(NS, cid) in (None, "STOPPED"), 20,
                        "the counter to stop")
        show(ctd.ctr_argv("task", "ls", ns=NS))
        show(ctd.ctr_argv("task", "delete", cid, ns=NS))
        show(ctd.ctr_argv("containers", "delete", cid, ns=NS))
        say("done: every call went through arch-runc to runc unchanged "
            "(checkpoint and resume arrive with the next release)")
    finally:
        ctd.stop()
        daemons.remove_cgroup_parent(NS)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
