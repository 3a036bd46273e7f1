"""Exit-status tracking: containerd's task-exit events recorded as <dir>/<namespace>/<id>.

tests/exit_watch (ContainerdEventWatcher + record_exit_status, what archd runs) subscribes
to the private containerd's event stream over gRPC. Containers that exit 0, exit 3 and are
killed with SIGKILL (137) are run through ctr (the session's namespace, and `k8s.io` as
Kubernetes' CRI uses it) and through Docker (namespace `moby`); every record must hold the
container's status, an exec'd process's exit must not count as the container's, and the
watcher must pick the stream up again after containerd restarts. exit_watch is stopped by
pid with SIGTERM at the end and must exit 0 promptly.
"""

import json
import os
import secrets
import signal
import subprocess
import time

import pytest

from archtest import proc

from conftest import NAMESPACE, build_dir

K8S_NAMESPACE = "k8s.io"
RECORD_TIMEOUT = 15  # seconds for an exit to reach the record


def exit_watch_path():
    return os.path.join(build_dir(), "tests", "exit_watch")


class Watcher:
    """A running exit_watch: its record directory and output."""

    def __init__(self, binary, env, base):
        self.env = env
        self.dir = os.path.join(base, "exits")
        self.ready = os.path.join(base, "exit-watch.ready")
        self.out_path = os.path.join(base, "exit-watch.out")
        self.err_path = os.path.join(base, "exit-watch.err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [binary, "--address", env.ctd.address, "--dir", self.dir, "--ready", self.ready],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self.wait_subscribed()

    def wait_subscribed(self, timeout=30):
        """Waits for the ready file, then until a probe container's exit is recorded: the
        ready file says the call is open, not that containerd has registered it yet."""
        def subscribed():
            if self.proc.poll() is not None:
                raise AssertionError(f"exit_watch exited {self.proc.returncode}: {self.log()}")
            return os.path.exists(self.ready)
        proc.wait_until(subscribed, timeout, "exit_watch to subscribe", interval=0.02)
        deadline = time.monotonic() + timeout
        while True:
            cid, r = ctr_run_to_exit(self.env, NAMESPACE, "exit 0")
            assert r.returncode == 0, r
            try:
                self.record(NAMESPACE, cid, timeout=2)
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def log(self):
        text = ""
        for path in (self.out_path, self.err_path):
            with open(path, errors="replace") as f:
                text += f.read()
        return text

    def record(self, ns, cid, timeout=RECORD_TIMEOUT):
        """The JSON record of ns/cid, waiting for it to appear."""
        path = os.path.join(self.dir, ns, cid)
        try:
            proc.wait_until(lambda: os.path.exists(path), timeout, f"exit record {ns}/{cid}")
        except proc.WaitTimeout as e:
            raise AssertionError(f"{e}\nexit_watch said:\n{self.log()}") from None
        with open(path) as f:
            return json.load(f)

    def stop(self):
        """SIGTERM by pid; returns (exit status, seconds it took)."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None, time.monotonic() - start
        return self.proc.returncode, time.monotonic() - start


@pytest.fixture(scope="module")
def watcher(containerd_env):
    binary = exit_watch_path()
    if not os.access(binary, os.X_OK):
        pytest.skip(f"exit_watch is not built: {binary} missing")
    base = os.path.join(containerd_env.base, "exit-watch")
    os.makedirs(base, mode=0o700, exist_ok=True)
    w = Watcher(binary, containerd_env, base)
    try:
        yield w
    finally:
        if w.proc.poll() is None:
            w.stop()


def new_id(label):
    return f"e2e-exit-{label}-{secrets.token_hex(3)}"


def assert_record(rec, status, cid):
    assert rec["exit_status"] == status, rec
    assert rec["exec_id"] == cid, rec
    assert rec["pid"] > 0, rec
    assert rec["exited_at"].endswith("Z") and "T" in rec["exited_at"], rec


# ---------------------------------------------------------------- ctr

def ctr_run_to_exit(env, ns, script, extra=()):
    cid = new_id("ctr")
    r = env.ctd.ctr("run", "--rm", "--runc-root", env.runc_root, *extra, env.image, cid,
                    "sh", "-c", script, ns=ns, timeout=60)
    return cid, r


def ctr_run_killed(env, ns, extra=()):
    """A container whose init is killed with SIGKILL while running; returns its id."""
    cid = new_id("kill")
    env.ctd.ctr("run", "-d", "--runc-root", env.runc_root, *extra, env.image, cid,
                "sleep", "1000", ns=ns, check=True)
    env.ctd.wait_status(ns, cid, "RUNNING")
    return cid


def ctr_kill_and_remove(env, ns, cid):
    env.ctd.ctr("task", "kill", "-s", "SIGKILL", cid, ns=ns, check=True)
    env.ctd.wait_status(ns, cid, "STOPPED")
    env.ctd.ctr("task", "delete", cid, ns=ns, timeout=30)
    env.ctd.ctr("containers", "rm", cid, ns=ns, timeout=30)


@pytest.mark.parametrize("status", [0, 3])
def test_ctr_exit_status(containerd_env, watcher, status):
    cid, r = ctr_run_to_exit(containerd_env, NAMESPACE, f"exit {status}")
    assert r.returncode == status, r
    assert_record(watcher.record(NAMESPACE, cid), status, cid)


def test_ctr_killed_is_137_and_exec_exits_do_not_count(containerd_env, watcher):
    env = containerd_env
    cid = ctr_run_killed(env, NAMESPACE)
    try:
        r = env.ctd.ctr("task", "exec", "--exec-id", "probe", cid, "sh", "-c", "exit 5",
                        ns=NAMESPACE, timeout=30)
        assert r.returncode == 5, r
        # The exec's exit was seen and ignored, not recorded as the container's.
        proc.wait_until(lambda: f" {cid} probe " in watcher.log(), RECORD_TIMEOUT,
                        "exit_watch to see the exec's exit")
        assert f"exit {NAMESPACE} {cid} probe" in watcher.log()
        assert not os.path.exists(os.path.join(watcher.dir, NAMESPACE, cid))
    finally:
        ctr_kill_and_remove(env, NAMESPACE, cid)
    assert_record(watcher.record(NAMESPACE, cid), 137, cid)


def test_kubernetes_namespace(containerd_env, image_archives, watcher):
    """Kubernetes' CRI runs its containers in containerd namespace k8s.io."""
    env = containerd_env
    env.ctd.ctr("images", "import", image_archives[0], ns=K8S_NAMESPACE, check=True, timeout=120)
    # Keep the tasks' cgroups under the session's parent, not under /k8s.io.
    def cgroup(cid):
        return ("--cgroup", f"/{NAMESPACE}/{cid}")
    ok_id = new_id("k8s")
    r = env.ctd.ctr("run", "--rm", "--runc-root", env.runc_root, *cgroup(ok_id), env.image,
                    ok_id, "sh", "-c", "exit 3", ns=K8S_NAMESPACE, timeout=60)
    assert r.returncode == 3, r
    killed = new_id("k8s-kill")
    env.ctd.ctr("run", "-d", "--runc-root", env.runc_root, *cgroup(killed), env.image, killed,
                "sleep", "1000", ns=K8S_NAMESPACE, check=True)
    env.ctd.wait_status(K8S_NAMESPACE, killed, "RUNNING")
    ctr_kill_and_remove(env, K8S_NAMESPACE, killed)
    assert_record(watcher.record(K8S_NAMESPACE, ok_id), 3, ok_id)
    assert_record(watcher.record(K8S_NAMESPACE, killed), 137, killed)


# ---------------------------------------------------------------- Docker

def test_docker_exit_statuses(docker_env, watcher):
    env = docker_env
    ids = {}
    for status in (0, 3):
        name = new_id(f"docker-{status}")
        r = env.docker("run", "--name", name, env.image, "sh", "-c", f"exit {status}",
                       timeout=60)
        assert r.returncode == status, r
        ids[status] = env.dockerd.inspect(name, "{{.Id}}")
    name = new_id("docker-kill")
    env.docker("run", "-d", "--name", name, env.image, "sleep", "1000", check=True)
    ids[137] = env.dockerd.inspect(name, "{{.Id}}")
    env.docker("kill", name, check=True)
    try:
        for status, cid in ids.items():
            assert_record(watcher.record("moby", cid), status, cid)
        assert env.dockerd.inspect(name, "{{.State.ExitCode}}") == "137"
    finally:
        env.docker("rm", "-f", *ids.values(), timeout=60)


# ---------------------------------------------------------------- reconnect and stop

def restart_containerd(ctd):
    """Stops containerd alone (tasks, shims and dockerd stay up) and starts it again."""
    proc.stop_process(ctd.proc)
    ctd.start()


def test_reconnects_after_containerd_restart(containerd_env, watcher):
    env = containerd_env
    os.unlink(watcher.ready)
    restart_containerd(env.ctd)
    watcher.wait_subscribed()  # exit_watch creates the ready file again once resubscribed
    assert "disconnected" in watcher.log()
    cid, r = ctr_run_to_exit(env, NAMESPACE, "exit 3")
    assert r.returncode == 3, r
    assert_record(watcher.record(NAMESPACE, cid), 3, cid)


def test_stops_promptly_on_sigterm(watcher):
    status, seconds = watcher.stop()
    assert status == 0, watcher.log()
    assert seconds < 2, f"exit_watch took {seconds:.2f}s to stop"
    assert "stopped" in watcher.log()


def test_waits_for_an_absent_containerd_and_stops_promptly(e2e_dir):
    """No containerd at the address: exit_watch keeps retrying (reported once) and still
    stops at once on SIGTERM, from its backoff wait."""
    binary = exit_watch_path()
    if not os.access(binary, os.X_OK):
        pytest.skip(f"exit_watch is not built: {binary} missing")
    base = os.path.join(e2e_dir, "exit-watch-absent")
    os.makedirs(base, mode=0o700)
    err_path = os.path.join(base, "err")
    with open(err_path, "wb") as err:
        p = subprocess.Popen([binary, "--address", os.path.join(base, "nothing.sock"), "--dir",
                              os.path.join(base, "exits")],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        time.sleep(3)  # several connection attempts
        assert p.poll() is None, open(err_path).read()
        start = time.monotonic()
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
        assert time.monotonic() - start < 2
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    text = open(err_path).read()
    assert text.count("disconnected") == 1, text
    assert "not reachable" in text, text
