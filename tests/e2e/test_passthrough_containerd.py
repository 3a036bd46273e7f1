"""arch-runc is a transparent runc pass-through under containerd (ctr --runc-binary).

Every scenario runs once with containerd's default runc and once with arch-runc; the
observable outcomes (exit statuses, stdout and stderr, terminal output, task states,
signal handling, freezing) must equal each other and the expected values, and the
arch-runc run must show, in each bundle's log.json, that arch-runc handled every
runtime call (create, start, exec, pause, resume, kill, delete).
"""

import functools
import os
import re
import time

import pytest

from archtest import matrix, proc

PASS = ["create", "start", "delete", "delete"]  # run to completion: ... delete, delete --force
# The init traps USR1 and INT (prints, keeps running) and TERM (prints, exits 143) and
# creates /tmp/ready once the traps are set.
TRAPS = ("trap 'echo got-USR1' USR1; trap 'echo got-INT' INT; "
         "trap 'echo got-TERM; exit 143' TERM; echo ready; touch /tmp/ready; "
         "while :; do sleep 1000 & wait $!; done")
# Counts in /tmp/counter (replaced atomically) about every 20 ms.
COUNTER = ("i=0; while :; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/counter; "
           "usleep 20000; done")


@pytest.fixture
def env(containerd_env):
    return containerd_env


def exit_code_of_delete(result):
    """`ctr task delete` reports a non-zero exit status only as a warning on stderr."""
    m = re.search(r"exit with non-zero exit code (\d+)", result.stderr)
    assert result.returncode == 0, result
    return int(m[1]) if m else 0


def strip_ctr_noise(text):
    """Drops ctr's own racy `resize pty` error (the process may exit before the resize)."""
    return "".join(l for l in text.splitlines(True) if "resize pty" not in l)


def compare(env, runtimes, node_config, scenario, expected, calls, enabled=()):
    return matrix.compare_runtimes(
        functools.partial(scenario, env), env.tap, runtimes["runc"], runtimes["arch-runc"],
        expected, calls, node_config.runc, enabled)


# ---------------------------------------------------------------- scenarios

def run_to_completion(script, env, rt, extra=()):
    cid = matrix.new_id("run", rt)
    r = env.ctr("run", "--rm", *rt.ctr_args(env.runc_root), *extra, env.image, cid,
                "sh", "-c", script, timeout=60)
    return {"status": r.returncode, "stdout": r.stdout, "stderr": r.stderr}, {"run": cid}


def test_run_stdout_stderr_exit_0(env, runtimes, node_config):
    script = "echo out-1; echo err-1 >&2; echo out-2; echo err-2 >&2"
    compare(env, runtimes, node_config, functools.partial(run_to_completion, script),
            {"status": 0, "stdout": "out-1\nout-2\n", "stderr": "err-1\nerr-2\n"},
            {"run": PASS})


def test_run_exit_3(env, runtimes, node_config):
    compare(env, runtimes, node_config,
            functools.partial(run_to_completion, "echo bye; echo oops >&2; exit 3"),
            {"status": 3, "stdout": "bye\n", "stderr": "oops\n"}, {"run": PASS})


def test_arch_enabled_container_runs_normally(env, runtimes, node_config):
    scenario = functools.partial(run_to_completion, "echo ARCH_ENABLE=$ARCH_ENABLE; exit 0",
                                 extra=("--env", "ARCH_ENABLE=1"))
    compare(env, runtimes, node_config, scenario,
            {"status": 0, "stdout": "ARCH_ENABLE=1\n", "stderr": ""}, {"run": PASS},
            enabled=("run",))


def tty_run(env, rt):
    cid = matrix.new_id("tty", rt)
    status, out = proc.run_in_pty(env.argv(
        "run", "-t", "--rm", *rt.ctr_args(env.runc_root), env.image, cid, "sh", "-c",
        "tty; [ -t 0 ] && echo stdin-is-tty; echo tty-ok; exit 4"), timeout=60)
    return {"status": status, "output": strip_ctr_noise(out)}, {"tty": cid}


def test_tty_run(env, runtimes, node_config):
    compare(env, runtimes, node_config, tty_run,
            {"status": 4, "output": "/dev/pts/0\nstdin-is-tty\ntty-ok\n"}, {"tty": PASS})


def exec_and_states(env, rt):
    cid = matrix.new_id("exec", rt)
    env.ctr("run", "-d", *rt.ctr_args(env.runc_root), env.image, cid, "sh", "-c", TRAPS,
            check=True)
    ready = os.path.join(env.rootfs(cid), "tmp", "ready")
    proc.wait_until(lambda: os.path.exists(ready), 30, f"{cid} to set its traps")
    out = {"states": [env.ctd.task_status(env.ns, cid)]}
    r = env.ctr("task", "exec", "--exec-id", "x1", cid, "sh", "-c",
                "echo exec-out; echo exec-err >&2; exit 5")
    out["exec"] = [r.returncode, r.stdout, r.stderr]
    r = env.ctr("task", "exec", "--exec-id", "x2", cid, "cat", "/proc/1/cmdline")
    out["exec_cmdline"] = [r.returncode, r.stdout.replace("\0", " "), r.stderr]
    status, text = proc.run_in_pty(env.argv("task", "exec", "-t", "--exec-id", "x3", cid, "sh",
                                            "-c", "tty; echo exec-tty-ok; exit 6"), timeout=60)
    out["exec_tty"] = [status, strip_ctr_noise(text)]
    out["states"].append(env.ctd.task_status(env.ns, cid))
    env.ctr("task", "kill", "-s", "SIGTERM", cid, check=True)
    env.ctd.wait_status(env.ns, cid, "STOPPED")
    out["states"].append("STOPPED")
    out["exit"] = exit_code_of_delete(env.ctr("task", "delete", cid))
    env.ctr("containers", "rm", cid, check=True)
    out["after_delete"] = env.ctd.task_status(env.ns, cid)
    return out, {"exec": cid}


def test_exec_and_task_states(env, runtimes, node_config):
    compare(env, runtimes, node_config, exec_and_states, {
        "states": ["RUNNING", "RUNNING", "STOPPED"],
        "exec": [5, "exec-out\n", "exec-err\n"],
        "exec_cmdline": [0, "sh -c " + TRAPS + " ", ""],
        "exec_tty": [6, "/dev/pts/0\nexec-tty-ok\n"],
        "exit": 143,
        "after_delete": None,
    }, {"exec": ["create", "start", "exec", "exec", "exec", "kill", "delete", "delete"]})


def pause_resume(env, rt):
    cid = matrix.new_id("pause", rt)
    env.ctr("run", "-d", *rt.ctr_args(env.runc_root), env.image, cid, "sh", "-c", COUNTER,
            check=True)
    counter = os.path.join(env.rootfs(cid), "tmp", "counter")
    proc.wait_until(lambda: (matrix.read_int(counter) or 0) >= 3, 30, f"{cid} to count")
    out = {"states": [env.ctd.task_status(env.ns, cid)]}
    env.ctr("task", "pause", cid, check=True)
    out["states"].append(env.ctd.task_status(env.ns, cid))
    frozen_at = proc.wait_until(lambda: matrix.read_int(counter), 5, "a counter value")
    # The running container counts every ~20 ms: 0.3 s of silence means it is frozen.
    time.sleep(0.3)
    out["frozen"] = matrix.read_int(counter) == frozen_at
    env.ctr("task", "resume", cid, check=True)
    out["states"].append(env.ctd.task_status(env.ns, cid))
    proc.wait_until(lambda: (matrix.read_int(counter) or 0) > frozen_at + 2, 30,
                    f"{cid} to count again after resume")
    out["counts_after_resume"] = True
    env.ctr("task", "kill", "-s", "SIGKILL", cid, check=True)
    env.ctd.wait_status(env.ns, cid, "STOPPED")
    out["states"].append("STOPPED")
    out["exit"] = exit_code_of_delete(env.ctr("task", "delete", cid))
    env.ctr("containers", "rm", cid, check=True)
    return out, {"pause": cid}


def test_pause_resume(env, runtimes, node_config):
    compare(env, runtimes, node_config, pause_resume, {
        "states": ["RUNNING", "PAUSED", "RUNNING", "STOPPED"],
        "frozen": True, "counts_after_resume": True, "exit": 137,
    }, {"pause": ["create", "start", "pause", "resume", "kill", "delete", "delete"]})


def signals(env, rt):
    """USR1 and INT are trapped (the container keeps running), TERM ends it with 143."""
    cid = matrix.new_id("sig", rt)
    run = proc.Background(env.argv("run", "--rm", *rt.ctr_args(env.runc_root), env.image, cid,
                                   "sh", "-c", TRAPS))
    try:
        run.stdout.wait_for("ready\n", 30)
        out = {"states": []}
        for sig, reply in (("SIGUSR1", "got-USR1\n"), ("SIGINT", "got-INT\n")):
            env.ctr("task", "kill", "-s", sig, cid, check=True)
            run.stdout.wait_for(reply, 15)
            out["states"].append(env.ctd.task_status(env.ns, cid))
        env.ctr("task", "kill", "-s", "SIGTERM", cid, check=True)
        status, stdout, stderr = run.wait(60)
    finally:
        run.kill()
    out.update(status=status, stdout=stdout, stderr=stderr)
    return out, {"sig": cid}


def test_signals_usr1_int_term(env, runtimes, node_config):
    compare(env, runtimes, node_config, signals, {
        "states": ["RUNNING", "RUNNING"], "status": 143,
        "stdout": "ready\ngot-USR1\ngot-INT\ngot-TERM\n", "stderr": "",
    }, {"sig": ["create", "start", "kill", "kill", "kill", "delete", "delete"]})


def sigkill(env, rt):
    cid = matrix.new_id("kill", rt)
    run = proc.Background(env.argv("run", "--rm", *rt.ctr_args(env.runc_root), env.image, cid,
                                   "sh", "-c", "echo ready; while :; do sleep 1000; done"))
    try:
        run.stdout.wait_for("ready\n", 30)
        env.ctr("task", "kill", "-s", "SIGKILL", cid, check=True)
        status, stdout, stderr = run.wait(60)
    finally:
        run.kill()
    return {"status": status, "stdout": stdout, "stderr": stderr}, {"kill": cid}


def test_sigkill_exit_137(env, runtimes, node_config):
    compare(env, runtimes, node_config, sigkill,
            {"status": 137, "stdout": "ready\n", "stderr": ""},
            {"kill": ["create", "start", "kill", "delete", "delete"]})


def kill_all_and_force_delete(env, rt):
    """`ctr task kill --all` and `ctr task delete --force` on running tasks."""
    out = {}
    ids = {"killall": matrix.new_id("killall", rt), "force": matrix.new_id("force", rt)}
    for label, cid in ids.items():
        env.ctr("run", "-d", *rt.ctr_args(env.runc_root), env.image, cid, "sleep", "1000",
                check=True)
        env.ctd.wait_status(env.ns, cid, "RUNNING")
    env.ctr("task", "kill", "--all", "-s", "SIGKILL", ids["killall"], check=True)
    env.ctd.wait_status(env.ns, ids["killall"], "STOPPED")
    out["killall_exit"] = exit_code_of_delete(env.ctr("task", "delete", ids["killall"]))
    out["force_exit"] = exit_code_of_delete(env.ctr("task", "delete", "--force", ids["force"]))
    for cid in ids.values():
        env.ctr("containers", "rm", cid, check=True)
    out["tasks_left"] = [env.ctd.task_status(env.ns, cid) for cid in ids.values()]
    return out, ids


def test_kill_all_and_delete_force(env, runtimes, node_config):
    compare(env, runtimes, node_config, kill_all_and_force_delete,
            {"killall_exit": 137, "force_exit": 137, "tasks_left": [None, None]},
            {"killall": ["create", "start", "kill", "delete", "delete"],
             "force": ["create", "start", "kill", "delete", "delete"]})
