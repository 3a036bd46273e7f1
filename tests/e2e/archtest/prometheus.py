"""A private Prometheus server (Debian's package) for the tests: scrapes the given targets
every second into a temporary TSDB, listens on a free loopback port, is started and
stopped by pid, and answers PromQL over its HTTP API (/api/v1/query, /api/v1/query_range)."""

import json
import os
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request

from archtest import proc
from archtest.archd import free_port


def binary():
    return shutil.which("prometheus")


class Prometheus:
    def __init__(self, base, targets, interval="1s"):
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        os.makedirs(base, exist_ok=True)
        self.config = os.path.join(base, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write("global:\n"
                    f"  scrape_interval: {interval}\n"
                    f"  evaluation_interval: {interval}\n"
                    "scrape_configs:\n"
                    "  - job_name: archd\n"
                    "    static_configs:\n"
                    f"      - targets: [{', '.join(repr(t) for t in targets)}]\n")

    def start(self, timeout=60):
        self.log = open(os.path.join(self.base, "prometheus.log"), "w")
        self.proc = subprocess.Popen(
            [binary(), f"--config.file={self.config}",
             f"--storage.tsdb.path={os.path.join(self.base, 'tsdb')}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1h"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}: {self.log_text()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        proc.wait_until(ready, timeout, "prometheus to be ready")
        return self

    def log_text(self):
        with open(os.path.join(self.base, "prometheus.log")) as f:
            return f.read()[-4000:]

    def api(self, path, **params):
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=30) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr, at=None):
        return self.api("query", query=expr, **({"time": at} if at else {}))["result"]

    def query_range(self, expr, start, end, step):
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def scrapes(self, job="archd"):
        """Successful scrapes of `job` so far (Prometheus' own `up` samples that are 1)."""
        res = self.query(f'count_over_time(up{{job="{job}"}}[10m])')
        return int(float(res[0]["value"][1])) if res else 0

    def wait_scrapes(self, n, timeout=60):
        """Waits until `n` more scrapes than now have happened."""
        want = self.scrapes() + n
        proc.wait_until(lambda: self.scrapes() >= want, timeout, f"{n} more scrapes")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
        return self.proc.returncode if self.proc else None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
