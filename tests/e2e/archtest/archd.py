"""archd, the node agent, as the tests run it: a real process with a private node config
(the session's runc, CRIU, store and registry, plus an [agent] section whose socket, state
file, event log and metrics port live in the test's own directory), started and stopped by
pid, and a small HTTP/1.1 client for its unix-socket API and its metrics port.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import time

from . import daemons, proc


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=30):
        super().__init__("archd", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


def request(conn, method, path, body=None):
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        return Response(r.status, dict(r.getheaders()), r.read().decode())
    finally:
        conn.close()


def write_config(directory, node, socket_path, state_file, event_log, metrics_port,
                 parallel=4, extra=""):
    """An arch.conf for archd: the session's node config (conftest.NodeConfig) + [agent]."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    os.chmod(directory, 0o755)
    text = f"[runtime]\nrunc = {node.runc}\n"
    if node.criu:
        text += f"criu = {node.criu}\n"
    text += f"[log]\nlevel = debug\nfile = {node.log_file}\n"
    text += f"[store]\npath = {node.store}\n[state]\ndir = {node.state}\n"
    keys = getattr(node, "keys", None)
    if not keys:
        keys, _ = daemons.make_key_dir(os.path.join(directory, "keys"))
    text += f"[keys]\ndir = {keys}\n"
    text += daemons.roots_section(getattr(node, "roots", None))
    text += (f"[agent]\nsocket = {socket_path}\nstate_file = {state_file}\n"
             f"event_log = {event_log}\n"
             f"metrics_address = {'127.0.0.1:%d' % metrics_port if metrics_port else ''}\n"
             f"imds_endpoint =\nfinalize_parallel = {parallel}\n{extra}")
    path = os.path.join(directory, "arch.conf")
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


class Archd:
    """One archd with its private config; start()/stop()/kill() by pid."""

    def __init__(self, binary, base, node, parallel=4, metrics=True, prefix=(), extra=""):
        self.binary = binary
        self.prefix = list(prefix)  # e.g. nsenter into a test node's namespaces
        self.base = base
        self.node = node
        os.makedirs(base, mode=0o700, exist_ok=True)
        self.socket = os.path.join(base, "run", "archd.sock")
        self.state_file = os.path.join(base, "agent", "state.json")
        self.event_log = os.path.join(base, "log", "events.jsonl")
        self.metrics_port = free_port() if metrics else None
        self.config = write_config(os.path.join(base, "etc"), node, self.socket,
                                   self.state_file, self.event_log, self.metrics_port, parallel,
                                   extra)
        self.output = os.path.join(base, "archd.out")
        self.proc = None
        self.starts = 0

    @property
    def flag(self):
        """The draining flag arch-runc reads: <state dir>/draining."""
        return os.path.join(self.node.state, "draining")

    def env(self):
        return dict(os.environ, ARCH_CONFIG=self.config)

    def start(self, timeout=20):
        assert self.proc is None or self.proc.poll() is not None, "archd is already running"
        self.starts += 1
        out = open(self.output, "a")
        out.write(f"--- start #{self.starts}\n")
        out.flush()
        self.proc = subprocess.Popen([*self.prefix, self.binary, "--config", self.config, "--foreground"],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                     env=self.env())
        out.close()

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"archd exited {self.proc.returncode} at start:\n"
                                     f"{self.log_text()}")
            try:
                return self.get("/v1/node/status").status == 200
            except OSError:
                return False
        proc.wait_until(ready, timeout, "archd to answer on its socket", interval=0.05)
        return self

    def stop(self, timeout=180):
        """SIGTERM by pid and wait (a drain's checkpoints in progress finish first)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"archd did not stop within {timeout}s of SIGTERM:\n"
                                 f"{self.log_text()}")

    def kill(self):
        """SIGKILL by pid (a crash); returns the exit status."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        return self.proc.returncode

    def log_text(self):
        try:
            with open(self.output, errors="replace") as f:
                return f.read()[-8000:]
        except OSError:
            return ""

    # ---- the API
    def call(self, method, path, body=None):
        return request(_UnixConnection(self.socket), method, path, body)

    def get(self, path):
        return self.call("GET", path)

    def status(self):
        r = self.get("/v1/node/status")
        assert r.status == 200, (r.status, r.body)
        return r.json()

    def metrics(self):
        """GET /metrics on the TCP metrics address: (content type, text)."""
        r = request(http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=30),
                    "GET", "/metrics")
        assert r.status == 200, (r.status, r.body)
        return r.headers.get("Content-Type"), r.body

    def wait_drain(self, drain_id, timeout=180):
        """Waits until drain `drain_id` is archd's last drain and no longer running."""
        def finished():
            d = self.status()["drain"]
            return d if d and d["id"] == drain_id and d["state"] != "running" else None
        try:
            return proc.wait_until(finished, timeout, f"drain {drain_id} to finish", interval=0.1)
        except proc.WaitTimeout as e:
            raise AssertionError(f"{e}\nstatus: {json.dumps(self.status(), indent=1)}\n"
                                 f"{self.log_text()}")

    def events(self):
        """The event log file's lines, parsed."""
        with open(self.event_log) as f:
            return [json.loads(line) for line in f if line.strip()]


def parse_metrics(text):
    """{'name{labels}': value} from the exposition text (comments skipped)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def wait_for(predicate, timeout, what):
    return proc.wait_until(predicate, timeout, what, interval=0.1)


def elapsed(since):
    return time.monotonic() - since
