"""arch-runc is a transparent runc pass-through under Docker (daemon.json `runtimes`).

Every scenario runs once with dockerd's default runtime (runc) and once with
`--runtime arch` (arch-runc); the observable outcomes (docker run's exit status,
stdout and stderr, terminal output, docker ps / logs / exec / pause / kill / stop /
wait / rm results) must equal each other and the expected values, and every bundle's
log.json must show that arch-runc handled each runtime call.
"""

import functools
import os
import re
import secrets
import time

import pytest

from archtest import matrix, proc

PASS = ["create", "start", "delete", "delete"]
LIFECYCLE = (
    "( i=0; while :; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/counter; "
    "usleep 20000; done ) & "
    "trap 'echo got-USR1' USR1; trap 'echo got-INT' INT; trap 'echo got-TERM; exit 143' TERM; "
    "echo ready-out; echo ready-err >&2; touch /tmp/ready; "
    "while :; do sleep 1000 & wait $!; done")


@pytest.fixture
def env(docker_env):
    return docker_env


def compare(env, runtimes, node_config, scenario, expected, calls, enabled=()):
    return matrix.compare_runtimes(
        functools.partial(scenario, env), env.tap, runtimes["runc"], runtimes["arch-runc"],
        expected, calls, node_config.runc, enabled)


def cidfile(env):
    return os.path.join(env.base, f"cid-{secrets.token_hex(6)}")


def read_cid(path):
    with open(path) as f:
        return f.read().strip()


def ps_status(env, cid):
    """`docker ps -a` STATUS with the durations dropped ("Up (Paused)", "Exited (3)")."""
    out = env.docker("ps", "-a", "--no-trunc", "--filter", f"id={cid}", "--format",
                     "{{.Status}}", check=True).stdout.strip()
    out = re.sub(r"^Up .*?( \(Paused\))?$", r"Up\1", out)
    return re.sub(r"^Exited \((\d+)\) .*$", r"Exited (\1)", out)


def state(env, cid):
    return env.dockerd.inspect(cid, "{{.State.Status}} {{.State.ExitCode}}")


def check_runtime(env, rt, cid):
    assert env.dockerd.inspect(cid, "{{.HostConfig.Runtime}}") == (rt.docker_runtime or "runc")


# ---------------------------------------------------------------- scenarios

def run_to_completion(script, env, rt, extra=()):
    f = cidfile(env)
    r = env.docker("run", "--rm", "--cidfile", f, *rt.docker_args(), *extra, env.image,
                   "sh", "-c", script)
    return {"status": r.returncode, "stdout": r.stdout, "stderr": r.stderr}, {"run": read_cid(f)}


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
    scenario = functools.partial(run_to_completion, "echo ARCH_ENABLE=$ARCH_ENABLE",
                                 extra=("-e", "ARCH_ENABLE=1"))
    compare(env, runtimes, node_config, scenario,
            {"status": 0, "stdout": "ARCH_ENABLE=1\n", "stderr": ""}, {"run": PASS},
            enabled=("run",))


def tty_run(env, rt):
    f = cidfile(env)
    status, out = proc.run_in_pty(env.argv(
        "run", "-t", "--rm", "--cidfile", f, *rt.docker_args(), env.image, "sh", "-c",
        "tty; [ -t 0 ] && echo stdin-is-tty; echo tty-ok; exit 4"), timeout=60,
        env=env.dockerd.env())
    return {"status": status, "output": out}, {"tty": read_cid(f)}


def test_tty_run(env, runtimes, node_config):
    compare(env, runtimes, node_config, tty_run,
            {"status": 4, "output": "/dev/pts/0\nstdin-is-tty\ntty-ok\n"}, {"tty": PASS})


def lifecycle(env, rt):
    """run -d, ps, logs, exec, exec -t, top, pause/unpause, kill USR1/INT, stop, wait, rm."""
    r = env.docker("run", "-d", *rt.docker_args(), env.image, "sh", "-c", LIFECYCLE, check=True)
    cid = r.stdout.strip()
    check_runtime(env, rt, cid)
    root = env.dockerd.merged_dir(cid)
    counter = os.path.join(root, "tmp", "counter")
    proc.wait_until(lambda: os.path.exists(os.path.join(root, "tmp", "ready")), 30,
                    f"{cid} to be ready")
    out = {"ps": [ps_status(env, cid)], "state": [state(env, cid)]}
    logs = env.docker("logs", cid, check=True)
    out["logs"] = [logs.stdout, logs.stderr]
    r = env.docker("exec", cid, "sh", "-c", "echo exec-out; echo exec-err >&2; exit 5")
    out["exec"] = [r.returncode, r.stdout, r.stderr]
    out["exec_tty"] = list(proc.run_in_pty(
        env.argv("exec", "-t", cid, "sh", "-c", "tty; echo exec-tty-ok; exit 6"), timeout=60,
        env=env.dockerd.env()))
    top = env.docker("top", cid, "-o", "pid,args", check=True).stdout
    out["top_has_init"] = "sh -c ( i=0;" in top
    # pause: the counter stops, docker reports paused; unpause: it counts again
    proc.wait_until(lambda: (matrix.read_int(counter) or 0) >= 3, 30, f"{cid} to count")
    env.docker("pause", cid, check=True)
    out["ps"].append(ps_status(env, cid))
    out["state"].append(state(env, cid))
    frozen_at = proc.wait_until(lambda: matrix.read_int(counter), 5, "a counter value")
    time.sleep(0.3)  # it counts every ~20 ms when running
    out["frozen"] = matrix.read_int(counter) == frozen_at
    env.docker("unpause", cid, check=True)
    out["state"].append(state(env, cid))
    proc.wait_until(lambda: (matrix.read_int(counter) or 0) > frozen_at + 2, 30,
                    f"{cid} to count again after unpause")
    # trapped signals: the container answers and keeps running
    for sig, reply in (("USR1", "got-USR1"), ("INT", "got-INT")):
        env.docker("kill", "-s", sig, cid, check=True)
        proc.wait_until(lambda: reply in env.docker("logs", cid).stdout, 15, reply)
    out["state"].append(state(env, cid))
    # stop: SIGTERM, trapped, exits 143 at once
    r = env.docker("stop", "-t", "30", cid)
    out["stop"] = [r.returncode, r.stdout.strip() == cid]
    r = env.docker("wait", cid)
    out["wait"] = [r.returncode, r.stdout]
    out["ps"].append(ps_status(env, cid))
    out["state"].append(state(env, cid))
    logs = env.docker("logs", cid, check=True)
    out["final_logs"] = [logs.stdout, logs.stderr]
    r = env.docker("rm", cid)
    out["rm"] = [r.returncode, r.stdout.strip() == cid]
    out["ps"].append(ps_status(env, cid))
    return out, {"life": cid}


def test_lifecycle(env, runtimes, node_config):
    compare(env, runtimes, node_config, lifecycle, {
        "ps": ["Up", "Up (Paused)", "Exited (143)", ""],
        "state": ["running 0", "paused 0", "running 0", "running 0", "exited 143"],
        "logs": ["ready-out\n", "ready-err\n"],
        "exec": [5, "exec-out\n", "exec-err\n"],
        "exec_tty": [6, "/dev/pts/0\nexec-tty-ok\n"],
        "top_has_init": True,
        "frozen": True,
        "stop": [0, True],
        "wait": [0, "143\n"],
        "final_logs": ["ready-out\ngot-USR1\ngot-INT\ngot-TERM\n", "ready-err\n"],
        "rm": [0, True],
    }, {"life": ["create", "start", "exec", "exec", "ps", "pause", "resume", "kill", "kill",
                 "kill", "delete", "delete"]})


def kill_and_force_remove(env, rt):
    """docker kill (SIGKILL, 137) + wait + rm, and docker rm -f of a running container."""
    ids = {}
    for label in ("kill", "rmf"):
        r = env.docker("run", "-d", *rt.docker_args(), env.image, "sleep", "1000", check=True)
        ids[label] = r.stdout.strip()
    out = {"ps": [ps_status(env, ids["kill"])]}
    out["kill"] = env.docker("kill", ids["kill"]).returncode
    r = env.docker("wait", ids["kill"])
    out["wait"] = [r.returncode, r.stdout]
    out["ps"].append(ps_status(env, ids["kill"]))
    out["rm"] = env.docker("rm", ids["kill"]).returncode
    out["rm_f"] = env.docker("rm", "-f", ids["rmf"]).returncode
    out["left"] = [ps_status(env, cid) for cid in ids.values()]
    return out, ids


def test_kill_137_and_rm_force(env, runtimes, node_config):
    compare(env, runtimes, node_config, kill_and_force_remove, {
        "ps": ["Up", "Exited (137)"], "kill": 0, "wait": [0, "137\n"], "rm": 0, "rm_f": 0,
        "left": ["", ""],
    }, {"kill": ["create", "start", "kill", "delete", "delete"],
        "rmf": ["create", "start", "kill", "delete", "delete"]})
