"""Golden capture: what command lines containerd-shim-runc-v2 and dockerd give a runtime.

A wrapper runtime (bash) appends its argv to a log, one call per line, each argument
shell-quoted with `printf %q`, then execs runc.  A fixed scenario drives containerd
(through ctr) and dockerd through every runtime call they make in the lifecycles we
care about; the recorded argvs are normalised (ids, bundle paths, temp files become
placeholders) and their distinct shapes compared with tests/golden/*.txt.

Golden file format (also read by the C++ unit tests): one normalised argv per line,
arguments separated by one space, lines sorted; placeholders contain no spaces:
  <root>            value of --root
  <bundle>          the task's bundle directory (also as a prefix: <bundle>/log.json)
  <id>              the container id
  <exec-id>         an exec process id (in <bundle>/<exec-id>.pid)
  <process-file>    the exec process.json temp file
  <console-socket>  the console socket path
"""

import os
import re
import secrets
import shlex

from . import daemons, proc

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "golden")
# containerd 2.x's shim (ARCH_E2E_ENGINES=forky) has its own file: its calls differ.
GOLDEN_CONTAINERD = os.path.join(
    GOLDEN_DIR, "containerd-2-shim-runc-v2.txt" if daemons.FORKY else "containerd-shim-runc-v2.txt")
GOLDEN_DOCKERD = os.path.join(GOLDEN_DIR, "dockerd.txt")

_BUNDLE = re.compile(r"^(?P<bundle>/.*/io\.containerd\.runtime\.v2\.task/[^/]+/(?P<id>[^/]+))"
                     r"(?P<rest>/.*)?$")
_VALUE_PLACEHOLDERS = {"--root": "<root>", "--process": "<process-file>",
                       "--console-socket": "<console-socket>"}


def write_wrapper(path, log_path, runc=daemons.RUNC):
    """Writes the logging wrapper runtime; it appends to log_path and execs runc."""
    with open(path, "w") as f:
        f.write(f"""#!/bin/bash
# ARCH e2e golden capture: record argv (one call per line, %q-quoted), then run runc.
printf -v line ' %q' "$@"
echo "${{line# }}" >> {shlex.quote(log_path)}
exec {shlex.quote(runc)} "$@"
""")
    os.chmod(path, 0o755)


def read_calls(log_path):
    """The recorded argvs, as lists of strings."""
    try:
        with open(log_path) as f:
            return [shlex.split(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def normalise(argv):
    """Replaces ids, bundle paths and temp files in one runtime argv with placeholders."""
    cid = None
    for a in argv:
        m = _BUNDLE.match(a)
        if m:
            cid = m["id"]
            break
    out = []
    for i, a in enumerate(argv):
        previous = argv[i - 1] if i else None
        if previous in _VALUE_PLACEHOLDERS:
            out.append(_VALUE_PLACEHOLDERS[previous])
            continue
        m = _BUNDLE.match(a)
        if m:
            rest = m["rest"] or ""
            if rest.endswith(".pid") and rest not in ("/init.pid",):
                rest = "/<exec-id>.pid"
            out.append("<bundle>" + rest)
        elif cid is not None and a == cid:
            out.append("<id>")
        else:
            out.append(a)
    return " ".join(out)


def shapes(log_path):
    return sorted({normalise(argv) for argv in read_calls(log_path)})


def read_golden(path):
    with open(path) as f:
        return sorted({line.rstrip("\n") for line in f if line.strip()})


def write_golden(path, lines):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(line + "\n" for line in sorted(set(lines)))
    os.replace(tmp, path)


# Scenario scripts.  The long-running container's init traps USR1 (keeps running)
# and TERM (exits 0) and says it is ready by creating /tmp/ready.
LONG_RUNNING = ("trap 'echo got-USR1' USR1; trap 'echo got-TERM; exit 0' TERM; "
                "touch /tmp/ready; while :; do sleep 1000 & wait $!; done")


def _uid(label):
    return f"cap-{label}-{secrets.token_hex(3)}"


def drive_containerd(ctd, ns, image, wrapper, runc_root):
    """Runs the containerd capture scenario (every call goes through `wrapper`)."""
    rt = ["--runc-binary", wrapper, "--runc-root", runc_root]

    def ctr(*args, **kw):
        return ctd.ctr(*args, ns=ns, check=True, **kw)

    # run to completion, plain and with a terminal (create with --console-socket)
    ctr("run", "--rm", *rt, image, _uid("run"), "sh", "-c", "echo out; echo err >&2")
    status, _ = proc.run_in_pty(ctd.ctr_argv("run", "-t", "--rm", *rt, image, _uid("tty"),
                                             "sh", "-c", "tty", ns=ns), timeout=30)
    assert status == 0
    # a long-running task: exec, exec -t, pause, resume, ps, kill USR1, kill TERM, delete
    cid = _uid("long")
    ctr("run", "-d", *rt, image, cid, "sh", "-c", LONG_RUNNING)
    ready = os.path.join(ctd.task_dir(ns), cid, "rootfs", "tmp", "ready")
    proc.wait_until(lambda: os.path.exists(ready), 20, "the container to be ready")
    assert ctd.ctr("task", "exec", "--exec-id", "e1", cid, "sh", "-c", "exit 5",
                   ns=ns).returncode == 5
    status, _ = proc.run_in_pty(ctd.ctr_argv("task", "exec", "-t", "--exec-id", "e2", cid,
                                             "tty", ns=ns), timeout=30)
    ctr("task", "pause", cid)
    ctd.wait_status(ns, cid, "PAUSED")
    ctr("task", "resume", cid)
    ctd.wait_status(ns, cid, "RUNNING")
    ctr("task", "ps", cid)
    ctr("task", "kill", "-s", "SIGUSR1", cid)
    ctr("task", "kill", "-s", "SIGTERM", cid)
    ctd.wait_status(ns, cid, "STOPPED")
    ctr("task", "delete", cid)
    ctr("containers", "rm", cid)
    # kill --all SIGKILL, then delete
    cid = _uid("killall")
    ctr("run", "-d", *rt, image, cid, "sleep", "1000")
    ctr("task", "kill", "-a", "-s", "SIGKILL", cid)
    ctd.wait_status(ns, cid, "STOPPED")
    ctr("task", "delete", cid)
    ctr("containers", "rm", cid)
    # delete --force of a running task (ctr kills it first)
    cid = _uid("force")
    ctr("run", "-d", *rt, image, cid, "sleep", "1000")
    ctr("task", "delete", "-f", cid)
    ctr("containers", "rm", cid)


def drive_dockerd(dockerd, image, runtime):
    """Runs the dockerd capture scenario with `--runtime runtime` (the wrapper)."""
    def docker(*args, **kw):
        return dockerd.cli(*args, check=True, **kw)

    rt = ["--runtime", runtime]
    docker("run", "--rm", *rt, image, "sh", "-c", "echo out; echo err >&2")
    status, _ = proc.run_in_pty(dockerd.argv("run", "-t", "--rm", *rt, image, "tty"),
                                timeout=30, env=dockerd.env())
    assert status == 0
    name = _uid("long")
    docker("run", "-d", "--name", name, *rt, image, "sh", "-c", LONG_RUNNING)
    ready = os.path.join(dockerd.merged_dir(name), "tmp", "ready")
    proc.wait_until(lambda: os.path.exists(ready), 20, "the container to be ready")
    assert dockerd.cli("exec", name, "sh", "-c", "exit 5").returncode == 5
    proc.run_in_pty(dockerd.argv("exec", "-t", name, "tty"), timeout=30, env=dockerd.env())
    docker("pause", name)
    docker("unpause", name)
    docker("top", name)
    docker("update", "--cpu-shares", "512", name)
    docker("kill", "-s", "USR1", name)
    docker("stop", name)
    docker("wait", name)
    docker("rm", name)
    name = _uid("kill")
    docker("run", "-d", "--name", name, *rt, image, "sleep", "1000")
    docker("kill", name)
    docker("wait", name)
    docker("rm", name)
    name = _uid("rmf")
    docker("run", "-d", "--name", name, *rt, image, "sleep", "1000")
    docker("rm", "-f", name)
