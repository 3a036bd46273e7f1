#!/usr/bin/env python3
"""The ARCH demo: a counter container checkpointed, removed, created again, and resumed.

Starts a private containerd (its own root, state and socket under a temporary
directory; the host's containerd, if any, is not touched), imports a locally built
busybox image and runs an ARCH-enabled counter container through arch-runc
(`ctr run --runc-binary /usr/local/bin/arch-runc --env ARCH_ENABLE=1`). It then does
what a spot reclaim does: `archctl container checkpoint`, the container ends and is
removed. Creating the same container again resumes it: the counter continues where it
stopped, with the file it was writing. Everything the demo started is removed at the end.
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
ARCHCTL = os.environ.get("ARCHCTL", "/usr/local/bin/archctl")
NS = "arch-demo"
CID = "counter"
COUNTER = ("i=0; while true; do i=$((i+1)); echo $i >> /counter.log; "
           "echo \"count $i\"; sleep 0.5; done")


def say(text):
    print(f"\n== {text}", flush=True)


def show(argv, check=True):
    print("$ " + " ".join(argv), flush=True)
    r = subprocess.run(argv, capture_output=True, text=True)
    out = (r.stdout + r.stderr).rstrip()
    if out:
        print(out, flush=True)
    if check and r.returncode != 0:
        raise SystemExit(f"demo: command failed with status {r.returncode}")
    return r


def counter_values(ctd):
    r = ctd.ctr("task", "exec", "--exec-id", f"peek{time.monotonic_ns()}", CID, "cat",
                "/counter.log", ns=NS, check=True)
    return [int(x) for x in r.stdout.split()]


def main():
    if os.geteuid() != 0:
        sys.exit("run as root: the demo starts containerd and runs containers")
    base = tempfile.mkdtemp(prefix="arch-demo-")
    os.chmod(base, 0o700)
    # The demo's own node config: its store is the default root (allowed by the node, not
    # chosen by the container) and its node key seals the checkpoint (SECURITY.md).
    store = os.path.join(base, "checkpoints")
    os.makedirs(store, mode=0o700)
    criu = "/opt/arch/criu/bin/criu"  # where setup's install-criu.sh puts a private CRIU
    config = daemons.write_node_config(os.path.join(base, "etc-arch"),
                                       os.path.join(base, "arch.log"), level="info",
                                       criu=criu if os.access(criu, os.X_OK) else None,
                                       store=store, state=os.path.join(base, "state"))
    os.environ["ARCH_CONFIG"] = config  # for archctl, and containerd's arch-runc calls
    ctd = daemons.Containerd(os.path.join(base, "containerd"),
                             env={"ARCH_CONFIG": config, "PATH": os.environ.get("PATH", "")})
    run = ["run", "-d", "--runc-binary", ARCH_RUNC, "--env", "ARCH_ENABLE=1", image.IMAGE_NAME,
           CID, "sh", "-c", COUNTER]
    try:
        say("arch-runc and archctl are installed")
        show([ARCH_RUNC, "--version"])
        show([ARCHCTL, "version"])

        say("a private containerd, and a busybox image built here (no registry needed)")
        ctd.start()
        archives = image.build_archives(base)
        show(ctd.ctr_argv("images", "import", archives[0], ns=NS))

        say("an ARCH-enabled counter container, run by containerd through arch-runc")
        show(ctd.ctr_argv(*run, ns=NS))
        ctd.wait_status(NS, CID, "RUNNING")
        proc.wait_until(lambda: len(counter_values(ctd)) >= 6, 30, "the counter to reach 6")
        show([ARCHCTL, "container", "list"])

        at_checkpoint = counter_values(ctd)[-1]
        say("the node is being reclaimed: checkpoint the container (it then ends)")
        show([ARCHCTL, "container", "checkpoint", f"{NS}/{CID}"])
        proc.wait_until(lambda: ctd.task_status(NS, CID) in (None, "STOPPED"), 30,
                        "the container to end")
        show(ctd.ctr_argv("task", "ls", ns=NS))
        show([ARCHCTL, "checkpoint", "inspect", "--store", store, f"{NS}/{CID}"])

        say("the container is deleted, as it is when its machine goes away")
        show(ctd.ctr_argv("task", "delete", CID, ns=NS), check=False)
        show(ctd.ctr_argv("containers", "delete", CID, ns=NS))

        say("the orchestrator starts the same job again: the same ctr run")
        show(ctd.ctr_argv(*run, ns=NS))
        ctd.wait_status(NS, CID, "RUNNING")
        first = counter_values(ctd)
        print(f"right after the new create, /counter.log already holds 1..{first[-1]} "
              f"(the counter was at {at_checkpoint} when checkpointed; a fresh start would "
              f"hold 1..1)")
        proc.wait_until(lambda: counter_values(ctd)[-1] > first[-1] + 3, 30, "the counter to go on")
        values = counter_values(ctd)
        gaps = [b for a, b in zip(values, values[1:]) if b != a + 1]
        print(f"a moment later it holds {values[0]}..{values[-1]}: "
              f"{'no gap and no repeat' if not gaps else 'GAPS: ' + str(gaps)}")
        if first[-1] < at_checkpoint or values[0] != 1 or gaps:
            raise SystemExit("demo: the counter did not continue cleanly")
        show(ctd.ctr_argv("task", "ls", ns=NS))

        say("done: the counter resumed where it stopped after its container was removed")
        show(ctd.ctr_argv("task", "kill", "-s", "SIGKILL", CID, ns=NS))
        proc.wait_until(lambda: ctd.task_status(NS, CID) in (None, "STOPPED"), 20,
                        "the counter to stop")
        show(ctd.ctr_argv("task", "delete", CID, ns=NS), check=False)
        show(ctd.ctr_argv("containers", "delete", CID, ns=NS))
    finally:
        ctd.stop()
        daemons.remove_cgroup_parent(NS)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
