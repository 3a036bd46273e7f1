"""ARCH's IMDSv2 client (src/lib/imds_client) against the loopback fake metadata service.

The client is driven through the test-only `imds_probe` (tests/imds_probe.cc), which polls
once per line written to its stdin and answers each poll with one JSON line; the fake
(archtest/fake_imds.py) is also checked directly with urllib, so that both sides of the
protocol are held to the real service's rules. Loopback only; no root needed.
"""

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import build_dir
from archtest.fake_imds import (REBALANCE_PATH, SPOT_PATH, TOKEN_HEADER, TOKEN_PATH, TTL_HEADER,
                                FakeImds, rfc3339)

FAKE_IMDS_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "archtest",
                                "fake_imds.py")
LINE_TIMEOUT = 20  # seconds to wait for one poll's answer


@pytest.fixture
def probe_path():
    path = os.path.join(build_dir(), "tests", "imds_probe")
    if not os.access(path, os.X_OK):
        pytest.skip(f"imds_probe is not built: {path}")
    return path


@pytest.fixture
def imds():
    with FakeImds() as fake:
        yield fake


class Probe:
    """imds_probe --stdin: poll() makes it poll once and returns its JSON line."""

    def __init__(self, path, endpoint, *args):
        self.proc = subprocess.Popen([path, "--endpoint", endpoint, "--stdin", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def poll(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        try:
            line = self.lines.get(timeout=LINE_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"imds_probe gave no answer within {LINE_TIMEOUT} s")
        assert line is not None, f"imds_probe exited: {self.proc.stderr.read()}"
        return json.loads(line)

    def close(self):
        """Ends the probe (EOF on stdin) and returns its exit status."""
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=LINE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("imds_probe did not exit on EOF")
        finally:
            self.proc.stdout.close()
            self.proc.stderr.close()


@pytest.fixture
def start_probe(probe_path):
    probes = []

    def start(endpoint, *args):
        probes.append(Probe(probe_path, endpoint, *args))
        return probes[-1]

    yield start
    for p in probes:
        if p.proc.returncode is None:
            p.close()


# urllib without proxies (an http_proxy in the environment must not see loopback tests).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method, url, headers=None):
    """(status, body) of one request."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def ok_notices(line):
    assert line["ok"], line.get("error")
    return line["notices"]


# ---------------------------------------------------------------- the fake itself

def test_fake_speaks_imdsv2(imds):
    url = imds.endpoint
    assert http("GET", url + SPOT_PATH)[0] == 401, "a GET without a token"
    assert http("GET", url + SPOT_PATH, {TOKEN_HEADER: "made-up"})[0] == 401
    assert http("PUT", url + TOKEN_PATH)[0] == 400, "no TTL header"
    for bad in ("0", "21601", "abc", "-5", ""):
        assert http("PUT", url + TOKEN_PATH, {TTL_HEADER: bad})[0] == 400, bad
    assert http("PUT", url + TOKEN_PATH, {TTL_HEADER: "60", "X-Forwarded-For": "10.0.0.1"})[0] \
        == 403
    assert http("GET", url + TOKEN_PATH)[0] == 405

    status, token = http("PUT", url + TOKEN_PATH, {TTL_HEADER: "21600"})
    assert status == 200 and token
    assert http("GET", url + SPOT_PATH, {TOKEN_HEADER: token}) == (404, "Not Found")
    assert http("GET", url + REBALANCE_PATH, {TOKEN_HEADER: token})[0] == 404
    when = imds.set_spot("hibernate", in_seconds=90)
    status, body = http("GET", url + SPOT_PATH, {TOKEN_HEADER: token})
    assert status == 200 and json.loads(body) == {"action": "hibernate", "time": when}
    imds.invalidate_tokens()
    assert http("GET", url + SPOT_PATH, {TOKEN_HEADER: token})[0] == 401


def test_fake_expires_tokens_after_their_ttl(imds):
    status, short = http("PUT", imds.endpoint + TOKEN_PATH, {TTL_HEADER: "1"})
    assert status == 200
    _, long = http("PUT", imds.endpoint + TOKEN_PATH, {TTL_HEADER: "60"})
    assert http("GET", imds.endpoint + SPOT_PATH, {TOKEN_HEADER: short})[0] == 404
    time.sleep(1.3)
    assert http("GET", imds.endpoint + SPOT_PATH, {TOKEN_HEADER: short})[0] == 401
    assert http("GET", imds.endpoint + SPOT_PATH, {TOKEN_HEADER: long})[0] == 404


# ---------------------------------------------------------------- the client

def test_nothing_pending_is_no_notice(imds, start_probe):
    probe = start_probe(imds.endpoint)
    for _ in range(3):
        assert ok_notices(probe.poll()) == []
    assert probe.close() == 0
    puts = [r for r in imds.requests if r.method == "PUT"]
    assert len(puts) == 1, "one token for all polls"
    assert puts[0].path == TOKEN_PATH and puts[0].ttl_header == "21600" and puts[0].status == 200
    gets = [r for r in imds.requests if r.method == "GET"]
    assert [r.path for r in gets] == [SPOT_PATH, REBALANCE_PATH] * 3
    assert all(r.had_token and r.status == 404 for r in gets)


def test_token_ttl_is_asked_for_and_the_token_renewed_before_it_ends(imds, start_probe):
    probe = start_probe(imds.endpoint, "--ttl", "3")
    assert probe.poll()["tokens_obtained"] == 1
    assert probe.poll()["tokens_obtained"] == 1
    time.sleep(2.3)  # Past the refresh point (TTL - 1 s), before the TTL ends.
    line = probe.poll()
    assert ok_notices(line) == [] and line["tokens_obtained"] == 2
    time.sleep(3.3)  # Past the end of the second token as well.
    line = probe.poll()
    assert ok_notices(line) == [] and line["tokens_obtained"] == 3
    assert probe.close() == 0
    assert [r.ttl_header for r in imds.requests if r.method == "PUT"] == ["3", "3", "3"]
    assert imds.count(status=401) == 0, "the client renews before the service refuses"


def test_one_second_ttl_gets_a_token_per_poll(imds, start_probe):
    probe = start_probe(imds.endpoint, "--ttl", "1")
    for i in range(1, 4):
        line = probe.poll()
        assert ok_notices(line) == [] and line["tokens_obtained"] == i
    probe.close()
    assert imds.count(status=401) == 0


def test_a_revoked_token_is_replaced_after_a_401(imds, start_probe):
    probe = start_probe(imds.endpoint)
    assert probe.poll()["tokens_obtained"] == 1
    imds.invalidate_tokens()
    imds.reset_requests()
    line = probe.poll()
    assert ok_notices(line) == [] and line["tokens_obtained"] == 2
    assert [(r.method, r.path, r.status) for r in imds.requests] == [
        ("GET", SPOT_PATH, 401), ("PUT", TOKEN_PATH, 200), ("GET", SPOT_PATH, 404),
        ("GET", REBALANCE_PATH, 404)]
    assert probe.close() == 0


def test_a_spot_notice_appearing_between_polls_is_reported(imds, start_probe):
    probe = start_probe(imds.endpoint, "--margin", "15")
    assert ok_notices(probe.poll()) == []
    reclaim_at = int(time.time()) + 120
    when = imds.set_spot("terminate", time=reclaim_at)
    notices = ok_notices(probe.poll())
    assert len(notices) == 1
    n = notices[0]
    assert (n["kind"], n["action"], n["time"]) == ("spot", "terminate", when)
    assert n["time_unix_ms"] == reclaim_at * 1000
    assert 100 <= n["deadline_seconds"] <= 105, n  # 120 s less the 15 s margin, less time spent
    imds.set_spot("stop", time="2026-11-21T23:59:00.250Z")
    n = ok_notices(probe.poll())[0]
    assert (n["action"], n["time"]) == ("stop", "2026-11-21T23:59:00.250Z")
    assert n["time_unix_ms"] == 1795305540250
    imds.clear_spot()
    assert ok_notices(probe.poll()) == []
    assert probe.close() == 0
    assert imds.count(status=401) == 0 and imds.count(method="PUT") == 1


def test_a_reclaim_time_already_past_gives_the_minimum_deadline(imds, start_probe):
    probe = start_probe(imds.endpoint)
    imds.set_spot("terminate", time=time.time() - 30)
    assert ok_notices(probe.poll())[0]["deadline_seconds"] == 5
    probe.close()


def test_a_rebalance_recommendation_is_reported(imds, start_probe):
    probe = start_probe(imds.endpoint)
    issued = imds.set_rebalance()
    notices = ok_notices(probe.poll())
    assert [(n["kind"], n["action"], n["time"]) for n in notices] == [
        ("rebalance", "rebalance", issued)]
    assert notices[0]["deadline_seconds"] == 300, "no deadline: the maximum"
    spot = imds.set_spot("terminate")
    assert [(n["kind"], n["time"]) for n in ok_notices(probe.poll())] == [
        ("spot", spot), ("rebalance", issued)]
    imds.clear_rebalance()
    imds.clear_spot()
    assert ok_notices(probe.poll()) == []
    assert probe.close() == 0


def test_polls_on_their_own_at_an_interval(imds, probe_path):
    imds.set_spot("terminate")
    r = subprocess.run([probe_path, "--endpoint", imds.endpoint, "--count", "3",
                        "--interval-ms", "100"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [line["poll"] for line in lines] == [1, 2, 3]
    assert all(line["notices"][0]["action"] == "terminate" for line in lines)


# ---------------------------------------------------------------- errors

def unused_loopback_port():
    """A bound, never-listening socket: connecting to its port is refused (no race)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s


def test_an_unreachable_endpoint_is_a_clear_error(probe_path):
    with unused_loopback_port() as s:
        port = s.getsockname()[1]
        r = subprocess.run([probe_path, "--endpoint", f"http://127.0.0.1:{port}"],
                           capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    line = json.loads(r.stdout)
    assert not line["ok"]
    assert f"PUT http://127.0.0.1:{port}{TOKEN_PATH}: " in line["error"]
    assert "connect" in line["error"].lower(), line["error"]


def test_a_server_error_names_the_url_and_status(imds, start_probe):
    probe = start_probe(imds.endpoint)
    imds.set_fault(status=500, path=SPOT_PATH)
    line = probe.poll()
    assert not line["ok"]
    assert f"GET {imds.endpoint}{SPOT_PATH}: HTTP 500" in line["error"], line["error"]
    imds.set_fault(status=500, path=TOKEN_PATH)
    imds.invalidate_tokens()
    line = probe.poll()
    assert not line["ok"]
    assert f"PUT {imds.endpoint}{TOKEN_PATH}: HTTP 500" in line["error"], line["error"]
    imds.clear_fault()
    assert ok_notices(probe.poll()) == [], "recovers once the service does"
    assert probe.close() == 1, "a failed poll makes the exit status 1"


def test_a_slow_service_times_out_and_the_next_poll_recovers(imds, start_probe):
    probe = start_probe(imds.endpoint, "--timeout-ms", "300")
    assert ok_notices(probe.poll()) == []
    imds.set_fault(delay=1.5)
    line = probe.poll()
    assert not line["ok"] and "timed out" in line["error"], line["error"]
    assert f"GET {imds.endpoint}{SPOT_PATH}" in line["error"]
    assert line["elapsed_ms"] < 1200
    imds.clear_fault()
    assert ok_notices(probe.poll()) == []
    probe.close()


def test_a_malformed_notice_is_a_clear_error(imds, start_probe):
    probe = start_probe(imds.endpoint)
    imds.set_spot_body("<html>not json</html>")
    line = probe.poll()
    assert not line["ok"]
    assert f"GET {imds.endpoint}{SPOT_PATH}: HTTP 200: spot instance-action: malformed JSON" \
        in line["error"], line["error"]
    imds.set_spot_body('{"action": "terminate", "time": "in two minutes"}')
    line = probe.poll()
    assert "bad RFC 3339 time 'in two minutes'" in line["error"], line["error"]
    imds.clear_spot()
    imds.set_rebalance_body('{"notice": "2026-11-21T23:50:00Z"}')
    line = probe.poll()
    assert f"GET {imds.endpoint}{REBALANCE_PATH}: HTTP 200: rebalance recommendation: " \
           "no \"noticeTime\"" in line["error"], line["error"]
    imds.set_rebalance_body("x" * 100_000)
    line = probe.poll()
    assert f"GET {imds.endpoint}{REBALANCE_PATH}: response larger than 65536 bytes" \
        in line["error"], line["error"]
    imds.clear_rebalance()
    assert ok_notices(probe.poll()) == []
    probe.close()


def test_an_ipv6_loopback_endpoint(start_probe):
    try:
        fake = FakeImds(host="::1")
    except OSError as e:
        pytest.skip(f"no IPv6 loopback: {e}")
    with fake:
        assert fake.endpoint.startswith("http://[::1]:")
        fake.set_spot("terminate")
        probe = start_probe(fake.endpoint)
        assert [n["kind"] for n in ok_notices(probe.poll())] == ["spot"]
        assert probe.close() == 0


# ---------------------------------------------------------------- standalone

def test_the_fake_runs_standalone_with_http_controls(probe_path):
    proc = subprocess.Popen([sys.executable, FAKE_IMDS_SCRIPT, "--port", "0", "--print-port"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        url = f"http://127.0.0.1:{port}"
        status, body = http("POST", url + "/_fake/spot", {"Content-Type": "application/json"})
        assert status == 200
        when = json.loads(body)["time"]
        r = subprocess.run([probe_path, "--endpoint", url], capture_output=True, text=True,
                           timeout=30)
        n = json.loads(r.stdout)["notices"][0]
        assert (n["kind"], n["action"], n["time"]) == ("spot", "terminate", when)
        stats = json.loads(http("GET", url + "/_fake/stats")[1])
        assert stats["requests"][f"PUT {TOKEN_PATH} 200"] == 1
        assert stats["requests"][f"GET {SPOT_PATH} 200"] == 1
        assert http("DELETE", url + "/_fake/spot")[0] == 200
        assert http("GET", url + "/_fake/nothing")[0] == 404
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()


def test_the_fake_refuses_non_loopback_addresses():
    with pytest.raises(ValueError):
        FakeImds(host="169.254.169.254")


def test_rfc3339_formatting_of_the_fake():
    assert rfc3339(1795305540) == "2026-11-21T23:59:00Z"
