"""archd, the node agent, as a real process: its unix-socket API, drains through
`archctl node drain` that checkpoint running ARCH-enabled containers on the session's
private containerd (which then resume when created again), its state across a restart in
the middle of a drain, its metrics as promtool reads them, its event log, archctl and
arch-runc working while it is stopped, and the systemd unit.

Each test starts its own archd by pid with a private config (the session's runc, CRIU,
store and registry, plus [agent] socket, state file, event log and a free loopback metrics
port in the test's directory) and stops it by pid; the draining flag is removed after.
"""

import http.client
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import archd_path, archctl_path, skip_unless_binaries, skip_unless_root
from archtest import (checkpoint, dashboard_render, monitoring, prometheus, proc, terminal,
                      workloads)
from archtest.archd import Archd, parse_metrics, request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNIT = os.path.join(REPO, "packaging", "archd.service")
COUNT = "/data/count.txt"


@pytest.fixture
def make_archd(node_config, e2e_dir):
    """A factory of Archd instances (not started); every one is stopped and undrained after."""
    skip_unless_root()
    skip_unless_binaries(archd_path(), archctl_path())
    made = []

    def make(parallel=4, metrics=True, extra=""):
        base = tempfile.mkdtemp(prefix="archd-", dir=e2e_dir)
        a = Archd(archd_path(), base, node_config, parallel=parallel, metrics=metrics,
                  extra=extra)
        made.append(a)
        return a

    yield make
    for a in made:
        if a.proc is not None and a.proc.poll() is None:
            a.call("POST", "/v1/node/undrain")
            assert a.stop() == 0, a.log_text()
            assert not os.path.exists(a.socket), "archd left its socket behind"
    if os.path.exists(os.path.join(node_config.state, "draining")):
        os.unlink(os.path.join(node_config.state, "draining"))


def archctl(a, *args, timeout=300):
    return proc.run([archctl_path(), *args], timeout=timeout, env=a.env())


def archctl_json(a, *args, ok=(0,), timeout=300):
    r = archctl(a, *args, "-o", "json", timeout=timeout)
    assert r.returncode in ok, f"archctl {args} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout)


def start_counters(c, n, label):
    ids = [checkpoint.new_id(f"{label}{i}") for i in range(n)]
    for cid in ids:
        c.run(cid, workloads.counter(COUNT))
    for cid in ids:
        c.wait_lines(cid, COUNT, 3, workloads.parse_counter)
    return ids


def check_resumes(c, cid, ckpt):
    """Deleted (exit 137 from the checkpoint) and run again, the container resumes from
    `ckpt`: same process (start line), its count going on with no value lost or repeated."""
    at_ckpt = checkpoint.diff_member(ckpt, COUNT)
    assert at_ckpt is not None, f"{COUNT} is not in {ckpt}"
    uuid0, values0 = workloads.parse_counter(at_ckpt.decode())
    c.run(cid, workloads.counter(COUNT))
    c.assert_restored(cid, ckpt)
    uuid, values = c.wait_lines(cid, COUNT, len(values0) + 3, workloads.parse_counter)
    assert uuid == uuid0, f"{cid} started again instead of resuming"
    workloads.check_sequence(values, f"{cid} after the restore")


# ------------------------------------------------------------------ API, socket, config

def test_api_status_socket_and_errors(make_archd):
    a = make_archd().start()
    st = os.stat(a.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(a.socket)).st_mode) == 0o700
    status = a.status()
    assert status["draining"] is False and status["drain"] is None
    assert status["pid"] == a.proc.pid
    assert status["watcher"]["state"] == "disabled"
    assert isinstance(status["containers"], list)
    assert [e["kind"] for e in status["events"]][-1:] == ["agent"]

    r = a.get("/v1/nope")
    assert r.status == 404 and "error" in r.json()
    r = a.call("POST", "/v1/node/drain", {"deadline_seconds": "soon"})
    assert r.status == 400 and "deadline_seconds" in r.json()["error"]
    r = a.call("POST", "/v1/node/drain", {"deadline_seconds": 0})
    assert r.status == 400
    events = a.get("/v1/events?since=0").json()
    assert events["events"] and events["next"] == events["events"][-1]["seq"]
    assert a.get(f"/v1/events?since={events['next']}").json()["events"] == []

    # A second archd on the same socket is refused; the first keeps answering.
    r = proc.run([archd_path(), "--config", a.config], timeout=30, env=a.env())
    assert r.returncode == 1 and "another archd" in r.stderr, r.stderr
    assert a.status()["pid"] == a.proc.pid
    # After a crash the stale socket is replaced.
    a.kill()
    assert os.path.exists(a.socket)
    a.start()
    assert a.status()["pid"] == a.proc.pid


def test_a_config_that_cannot_be_used_is_refused(make_archd, e2e_dir):
    a = make_archd()
    r = proc.run([archd_path(), "--config", os.path.join(e2e_dir, "no-such.conf")], timeout=30)
    assert r.returncode == 2 and "not starting" in r.stderr, r.stderr
    os.chmod(a.config, 0o666)  # writable by others: ignored as a whole
    try:
        r = proc.run([archd_path(), "--config", a.config], timeout=30)
        assert r.returncode == 2, r.stderr
    finally:
        os.chmod(a.config, 0o644)


# ------------------------------------------------------------------ drains of real containers

def test_drain_checkpoints_every_container_and_they_resume(make_archd, ctr_containers):
    c = ctr_containers
    a = make_archd(parallel=4).start()
    ids = start_counters(c, 3, "drain")
    assert {x["id"] for x in a.status()["containers"] if x["status"] == "running"} >= set(ids)

    # On a terminal (an operator's shell): a line per container as the drain reports it,
    # on stderr; stdout keeps the report.
    code, shown, out, elapsed = terminal.run_on_terminal(
        [archctl_path(), "node", "drain", "--reason", "e2e maintenance", "--deadline", "100",
         "--wait"], env=a.env())
    assert code == 0, f"{out}\n{shown}\n{a.log_text()}"
    assert "3 containers, 3 checkpointed, 0 not" in out, out
    assert "drain " in shown and "deadline 100 s" in shown, repr(shown)
    for cid in ids:
        assert re.search(rf"\[\d+/\d+\] {c.ns}/{cid}: checkpointed in \d+\.\d\d s", shown), \
            repr(shown)
    assert not re.search(r"^\[\d+/", out, re.M), "progress went to stdout"
    status = a.status()
    assert status["draining"] and status["drain_reason"] == "e2e maintenance"
    assert status["drain_kind"] == "manual" and os.path.exists(a.flag)
    report = status["drain"]["report"]
    results = {x["id"]: x for x in report["containers"] if x["namespace"] == c.ns}
    assert sorted(results) == sorted(ids), report
    assert all(x["result"] == "checkpointed" for x in results.values()), report
    print(f"\ndrain of {len(ids)} containers: {report['total_seconds']:.2f} s in archd, "
          f"{elapsed:.2f} s from `archctl node drain` to its report")

    # The event log: one line per checkpoint and the drain's start and end.
    events = a.events()
    for e in events:
        assert set(e) >= {"time", "kind", "namespace", "id", "outcome", "duration_ms", "detail"}
    ckpts = {e["id"]: e for e in events if e["kind"] == "checkpoint"}
    assert sorted(ckpts) == sorted(ids) and {e["outcome"] for e in ckpts.values()} == {"ok"}
    assert all(ckpts[cid]["detail"] == results[cid]["detail"] for cid in ids)
    assert [e["outcome"] for e in events if e["kind"] == "drain"] == ["started", "done"]

    m = parse_metrics(a.metrics()[1])
    assert m['arch_checkpoints_total{source="drain",outcome="ok"}'] == 3
    assert m['arch_checkpoint_duration_seconds_count{source="drain"}'] == 3
    assert m['arch_checkpoint_bytes_total{source="drain"}'] > 0
    assert m["arch_node_draining"] == 1
    assert m['arch_notices_total{kind="manual"}'] == 1

    assert archctl_json(a, "node", "undrain")["was_draining"] is True
    assert not os.path.exists(a.flag)
    for cid in ids:
        assert c.delete(cid) == 137
    for cid in ids:
        check_resumes(c, cid, results[cid]["detail"])
    # archd counts the restores arch-runc recorded in the activity log, with their durations
    # and the bytes they read.
    restores = 'arch_restores_total{source="create",outcome="ok"}'
    proc.wait_until(lambda: parse_metrics(a.metrics()[1])[restores] >= 3,
                    20, "archd to count 3 restores")
    m = parse_metrics(a.metrics()[1])
    assert m['arch_restore_duration_seconds_count{source="create"}'] >= 3
    assert m['arch_restore_duration_seconds_sum{source="create"}'] > 0
    assert m['arch_restore_bytes_total{source="create"}'] > 0
    restores = {e["id"]: e for e in a.events() if e["kind"] == "restore"}
    assert set(restores) >= set(ids)
    assert all(restores[cid]["detail"].endswith(results[cid]["detail"]) for cid in ids), restores


def test_archd_restarted_mid_drain_keeps_draining(make_archd, ctr_containers):
    c = ctr_containers
    a = make_archd(parallel=1).start()  # one at a time: the stop lands mid-drain
    ids = start_counters(c, 4, "restart")
    since = a.get("/v1/events").json()["next"]
    r = a.call("POST", "/v1/node/drain", {"reason": "before a restart", "deadline_seconds": 120})
    assert r.status == 202, r.body
    first = r.json()["drain_id"]
    # A second drain while this one runs is refused.
    assert a.call("POST", "/v1/node/drain", {}).status == 409
    # Stop archd once the first container is checkpointed: the one in progress finishes,
    # the rest wait for the next start.
    proc.wait_until(lambda: any(e["kind"] == "checkpoint" for e in
                                a.get(f"/v1/events?since={since}").json()["events"]),
                    60, "the drain's first checkpoint", interval=0.005)
    assert a.stop() == 0, a.log_text()
    assert os.path.exists(a.flag), "the draining flag must outlive archd"
    with open(a.state_file) as f:
        saved = json.load(f)
    assert saved["draining"] and saved["drain_reason"] == "before a restart"
    assert saved["drains"][-1]["id"] == first
    assert saved["drains"][-1]["state"] in ("interrupted", "done"), saved["drains"][-1]
    print("\nfirst drain:", saved["drains"][-1]["state"],
          [x["result"] for x in saved["drains"][-1]["report"]["containers"]])

    a.start()
    status = a.status()
    assert status["draining"] and status["drain_reason"] == "before a restart"
    done = {}
    for d in saved["drains"][-1:]:
        done.update({x["id"]: x for x in d["report"]["containers"] if x["result"] == "checkpointed"})
    if saved["drains"][-1]["state"] == "interrupted":
        resumed = a.wait_drain(first + 1)
        assert resumed["resumed_from"] == first and resumed["state"] == "done", resumed
        assert resumed["deadline_seconds"] <= 120
        done.update({x["id"]: x for x in resumed["report"]["containers"]
                     if x["result"] == "checkpointed"})
    assert sorted(done) == sorted(ids), f"not all checkpointed across the restart: {done}"
    for cid in ids:
        assert c.delete(cid) == 137
    a.call("POST", "/v1/node/undrain")
    check_resumes(c, ids[0], done[ids[0]]["detail"])


def test_draining_state_survives_a_crash(make_archd):
    a = make_archd(metrics=False).start()
    r = a.call("POST", "/v1/node/drain", {"reason": "crash test", "deadline_seconds": 30})
    assert r.status == 202
    drain = a.wait_drain(r.json()["drain_id"])
    assert a.get(f"/v1/drains/{drain['id']}").json() == drain
    assert a.get("/v1/drains/999").status == 404
    a.kill()
    os.unlink(a.flag)  # as a reboot empties /run
    a.start()
    st = a.status()
    assert st["draining"] and st["drain_reason"] == "crash test"
    assert os.path.exists(a.flag), "archd re-asserts the draining flag at start"
    out = archctl(a, "node", "status")
    assert out.returncode == 0 and "draining:   yes" in out.stdout and "crash test" in out.stdout
    # CRIU as archd sees it: path and version, setup's trial (or why there is none), probes.
    assert "criu:" in out.stdout and "trial:" in out.stdout and "lazy pages" in out.stdout, out.stdout
    assert set(st["criu"]["features"]) >= {"dirty_tracking", "lazy_pages", "file_locks"}, st["criu"]
    assert archctl_json(a, "node", "undrain")["was_draining"] is True
    assert not a.status()["draining"] and not os.path.exists(a.flag)


# ------------------------------------------------------------------ metrics

def test_metrics_pass_promtool(make_archd):
    a = make_archd().start()
    ctype, text = a.metrics()
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    promtool = shutil.which("promtool")
    if promtool:
        r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, f"promtool: {r.stdout}{r.stderr}\n{text}"
    m = parse_metrics(text)
    for name in ('arch_checkpoints_total{source="drain",outcome="ok"}',
                 'arch_restores_total{source="create",outcome="ok"}',
                 'arch_checkpoint_duration_seconds_bucket{source="archctl",le="+Inf"}',
                 'arch_checkpoint_bytes_total{source="on_stop"}', "arch_managed_containers",
                 'arch_notices_total{kind="spot"}', "arch_quarantined_checkpoints",
                 "arch_node_draining"):
        assert name in m, f"{name} missing from\n{text}"
    assert m["arch_node_draining"] == 0
    # The same exposition on the unix socket.
    assert a.get("/metrics").body.startswith("# HELP arch_checkpoints_total")
    a.call("POST", "/v1/node/drain", {"reason": "metrics"})
    assert parse_metrics(a.metrics()[1])["arch_node_draining"] == 1
    if not promtool:
        pytest.skip("promtool (Debian package prometheus) is not installed: format not linted")


def test_every_checkpoint_and_restore_is_counted_whoever_made_it(make_archd, ctr_containers):
    """archctl's checkpoints, arch-runc's on stop and on create: archd counts them from the
    node's activity log, by source and outcome, once each, across a restart of archd."""
    c = ctr_containers
    a = make_archd().start()
    (cid,) = start_counters(c, 1, "counted")
    stopper = checkpoint.new_id("counted-stop")
    c.run(stopper, workloads.counter(COUNT), env=("ARCH_CHECKPOINT_ON_STOP=1",))
    c.wait_lines(stopper, COUNT, 3, workloads.parse_counter)
    m0 = parse_metrics(a.metrics()[1])
    ok = 'arch_checkpoints_total{source="%s",outcome="%s"}'

    out = c.checkpoint(cid)  # archctl container checkpoint
    m = parse_metrics(a.metrics()[1])  # each scrape reads the activity log first
    assert m[ok % ("archctl", "ok")] == m0[ok % ("archctl", "ok")] + 1
    assert m['arch_checkpoint_duration_seconds_count{source="archctl"}'] == \
        m0['arch_checkpoint_duration_seconds_count{source="archctl"}'] + 1
    assert m['arch_checkpoint_bytes_total{source="archctl"}'] > \
        m0['arch_checkpoint_bytes_total{source="archctl"}']
    assert m[ok % ("drain", "ok")] == m0[ok % ("drain", "ok")], "not archd's own"
    age = m.get(f'arch_newest_checkpoint_age_seconds{{owner="{c.ns}",key="{c.key_of(cid)}"}}')
    assert age is not None and 0 <= age < 120, (age, sorted(k for k in m if "age" in k))
    assert m["arch_checkpoint_keys"] >= 1
    # The container has ended: a second checkpoint fails, and is counted as failed.
    r = archctl(a, "container", "checkpoint", f"{c.ns}/{cid}")
    assert r.returncode != 0
    m = parse_metrics(a.metrics()[1])
    assert m[ok % ("archctl", "failed")] == m0[ok % ("archctl", "failed")] + 1

    c.signal(stopper, "SIGTERM")  # arch-runc checkpoints it instead
    assert c.delete(stopper) == 137
    m = parse_metrics(a.metrics()[1])
    assert m[ok % ("on_stop", "ok")] == m0[ok % ("on_stop", "ok")] + 1

    assert c.delete(cid) == 137
    check_resumes(c, cid, out["checkpoint"])  # arch-runc restores it on create
    restored = 'arch_restores_total{source="create",outcome="ok"}'
    m = parse_metrics(a.metrics()[1])
    assert m[restored] == m0[restored] + 1
    assert m['arch_restore_bytes_total{source="create"}'] > m0['arch_restore_bytes_total{source="create"}']
    events = a.events()
    assert any(e["kind"] == "checkpoint" and e["id"] == cid and
               e["detail"] == "by archctl: " + out["checkpoint"] for e in events), events
    assert any(e["kind"] == "restore" and e["id"] == cid and
               e["detail"].endswith(out["checkpoint"]) for e in events), events

    # A restart keeps the counters and counts nothing twice.
    before = parse_metrics(a.metrics()[1])
    assert a.stop() == 0, a.log_text()
    a.start()
    after = parse_metrics(a.metrics()[1])
    for name in (ok % ("archctl", "ok"), ok % ("archctl", "failed"), ok % ("on_stop", "ok"),
                 restored):
        assert after[name] == before[name], name


def test_activity_log_is_private_and_garbage_is_not_counted(make_archd):
    """The activity log lives in the root-only state directory; lines that are not records,
    or name a source archd does not take from it, count nothing but the invalid counter."""
    a = make_archd().start()
    path = os.path.join(a.node.state, "activity.jsonl")
    m0 = parse_metrics(a.metrics()[1])
    with open(path, "a") as f:  # created by archd's first scrape or by a writer before
        f.write("not json\n")
        f.write(json.dumps({"time": 1, "what": "checkpoint", "source": "drain", "outcome": "ok"}) + "\n")
        f.write(json.dumps({"time": 1, "what": "restore", "source": 'x",evil="1',
                            "outcome": "ok"}) + "\n")
    os.chmod(path, 0o600)
    m = parse_metrics(a.metrics()[1])
    assert m["arch_activity_invalid_records_total"] == m0["arch_activity_invalid_records_total"] + 3
    assert m['arch_checkpoints_total{source="drain",outcome="ok"}'] == \
        m0['arch_checkpoints_total{source="drain",outcome="ok"}']
    assert not any("evil" in k for k in m)
    # A file others may write is not read at all.
    os.chmod(path, 0o666)
    try:
        with open(path, "a") as f:
            f.write(json.dumps({"time": 1, "what": "checkpoint", "source": "archctl",
                                "outcome": "ok"}) + "\n")
        m = parse_metrics(a.metrics()[1])
        assert m['arch_checkpoints_total{source="archctl",outcome="ok"}'] == \
            m0['arch_checkpoints_total{source="archctl",outcome="ok"}']
        assert "not a private regular file" in a.log_text()
    finally:
        os.unlink(path)


def test_dashboard_and_alerts_use_only_metrics_archd_exports(make_archd):
    """Every arch_* name in deploy/monitoring's dashboard queries and alert rules is in a
    real scrape of archd."""
    a = make_archd().start()
    exposed = monitoring.exposed_names(a.metrics()[1])
    assert "arch_notice_watcher_consecutive_errors" in exposed
    assert "arch_checkpoint_duration_seconds_bucket" in exposed
    used = {}
    for title, expr in monitoring.dashboard_exprs() + monitoring.rule_exprs():
        for name in monitoring.metric_names(expr):
            used.setdefault(name, title)
    # The per-key gauge has samples only once a key has a checkpoint: its family is there.
    families = exposed | {line.split()[2] for line in a.metrics()[1].splitlines()
                          if line.startswith("# TYPE ")}
    missing = {name: title for name, title in used.items() if name not in families}
    assert not missing, f"not exported by archd: {missing}"


def test_status_page_is_plain_escaped_html(make_archd, ctr_containers):
    """GET /status on the metrics address: the node, its containers and recent events in
    HTML with every value escaped and no script, fetched as a plain HTTP client would."""
    c = ctr_containers
    a = make_archd().start()
    (cid,) = start_counters(c, 1, "status")
    a.call("POST", "/v1/node/drain", {"reason": "<script>alert('drain')</script>",
                                      "deadline_seconds": 60})
    a.wait_drain(a.status()["drain"]["id"])
    r = request(http.client.HTTPConnection("127.0.0.1", a.metrics_port, timeout=30),
                "GET", "/status")
    assert r.status == 200, r.body
    assert r.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    page = r.body
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert f"<td>{cid}</td>" in page, page
    assert "Draining since" in page and "<td>checkpointed</td>" in page
    assert "&lt;script&gt;alert(&#39;drain&#39;)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "nothing from elsewhere"
    assert c.delete(cid) == 137
    a.call("POST", "/v1/node/undrain")


def test_status_page_in_headless_chromium(make_archd, ctr_containers, tmp_path):
    """The status page as an operator's browser shows it (Debian's chromium, headless):
    the rendered DOM names the checkpointed container; a drain reason carrying a script
    that would retitle the page is shown as text and never runs; the screenshot is a real
    picture (a PNG of the window's size with more than one colour). With
    ARCH_SCREENSHOT_DIR set, the screenshot is kept there (the README's picture)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    c = ctr_containers
    a = make_archd().start()
    (cid,) = start_counters(c, 1, "chromium")
    payload = "<script>document.title='PWNED'</script><img src=x onerror=\"document.title='PWNED'\">"
    a.call("POST", "/v1/node/drain", {"reason": payload, "deadline_seconds": 60})
    a.wait_drain(a.status()["drain"]["id"])
    url = f"http://127.0.0.1:{a.metrics_port}/status"
    # A private profile: nothing of the browser is left behind in $HOME.
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000"]
    dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert f"<td>{cid}</td>" in page, page[:3000]
    assert "PWNED" not in re.sub(r"&lt;.*?&gt;", "", page.split("<title>")[1].split("</title>")[0]), page[:500]
    assert "&lt;script&gt;document.title=" in page, "the reason is shown as text"
    assert "<script" not in page.lower() and "<img" not in page.lower()
    shot = tmp_path / "status.png"
    r = subprocess.run(base + ["--window-size=1280,900", f"--screenshot={shot}", url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 900), (width, height)
    assert len(data) > 10000, f"{len(data)} bytes: an empty page compresses smaller"
    keep = os.environ.get("ARCH_SCREENSHOT_DIR")
    if keep:  # the README's picture: the same page after an ordinary drain
        a.call("POST", "/v1/node/undrain")
        (shown,) = start_counters(c, 1, "batch-job")
        a.call("POST", "/v1/node/drain", {"reason": "spot reclaim notice", "deadline_seconds": 60})
        a.wait_drain(a.status()["drain"]["id"])
        assert c.delete(shown) == 137
        r = subprocess.run(base + ["--window-size=1280,900",
                                   f"--screenshot={os.path.join(keep, 'status-page.png')}", url],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
    assert c.delete(cid) == 137
    a.call("POST", "/v1/node/undrain")


def test_dashboard_panels_show_a_real_archd_in_prometheus(make_archd, ctr_containers, tmp_path):
    """deploy/monitoring's Grafana dashboard against real data: a real Prometheus (Debian's)
    scrapes a real archd every second while two containers are checkpointed by a drain and
    restored on create; every panel's queries, run by that Prometheus as Grafana would run
    them, show what happened (checkpoints and restores by source, durations, bytes, keys,
    the manual drain, the build). The panels are drawn in their layout (Grafana itself is
    not in Debian: archtest/dashboard_render.py) and photographed by headless Chromium when
    it is installed; with ARCH_SCREENSHOT_DIR set, the picture is kept there as
    dashboard.png (the README's picture)."""
    if not prometheus.binary():
        pytest.skip("prometheus (Debian package prometheus) is not installed")
    c = ctr_containers
    a = make_archd().start()
    prom = prometheus.Prometheus(str(tmp_path / "prometheus"), [f"127.0.0.1:{a.metrics_port}"])
    with prom:
        start = time.time()
        prom.wait_scrapes(3)
        ids = start_counters(c, 2, "dash")
        a.call("POST", "/v1/node/drain", {"reason": "spot reclaim notice",
                                          "deadline_seconds": 60})
        a.wait_drain(a.status()["drain"]["id"])
        prom.wait_scrapes(3)
        assert archctl_json(a, "node", "undrain")["was_draining"] is True
        for cid in ids:
            assert c.delete(cid) == 137
        for cid in ids:
            c.run(cid, workloads.counter(COUNT))
        for cid in ids:
            c.wait_lines(cid, COUNT, 3, workloads.parse_counter)
        restores = 'arch_restores_total{source="create",outcome="ok"}'
        proc.wait_until(lambda: parse_metrics(a.metrics()[1]).get(restores, 0) >= 2,
                        20, "archd to count 2 restores")
        prom.wait_scrapes(4)
        end = time.time()
        panels = dashboard_render.evaluate(prom, monitoring.load_dashboard(), start, end,
                                           step=1, rate_interval="10s")
    by_title = {p["title"]: dict(series) for p, series in panels}

    def peak(title, name):
        pts = by_title[title].get(name)
        assert pts, f"panel {title!r} has no series {name!r}: {sorted(by_title[title])}"
        return max(v for _, v in pts)

    def last(title):
        return sum(pts[-1][1] for pts in by_title[title].values())

    assert last("Managed containers") >= 2
    assert last("Keys with checkpoints") >= 2
    assert len(by_title["archd versions"]) == 1, by_title["archd versions"]
    assert len(by_title["Oldest newest-checkpoints (top 20 keys)"]) >= 2
    assert peak("Checkpoints by source and outcome", "drain ok") > 0
    assert peak("Checkpoint duration (p50, p95)", "p95 drain") > 0
    assert peak("Checkpoint bytes written", "drain") > 0
    assert peak("Restores by source and outcome", "create ok") > 0
    assert peak("Restore duration (p50, p95)", "p50 create") > 0
    assert peak("Restore bytes read", "create") > 0
    assert peak("Drain triggers (1h)", "manual") >= 1
    assert last("Nodes draining") == 0, "undrained before the end"
    # Nothing failed here: the failures panel shows no failed checkpoint.
    assert all(v == 0 for name, pts in by_title["Checkpoint failures and skips (1h)"].items()
               if name.startswith("failed") for _, v in pts)

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        return
    page = tmp_path / "dashboard.html"
    page.write_text(dashboard_render.page(panels, "ARCH (deploy/monitoring/grafana-dashboard.json)",
                                          1600, start, end))
    text = page.read_text()
    assert "<script" not in text and "http" not in text.replace('"http://www.w3.org/2000/svg"', "")
    keep = os.environ.get("ARCH_SCREENSHOT_DIR")
    shot = os.path.join(keep, "dashboard.png") if keep else str(tmp_path / "dashboard.png")
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1600,2200",
                        "--hide-scrollbars", f"--screenshot={shot}", f"file://{page}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and os.path.exists(shot), r.stderr[-2000:]
    with open(shot, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000, len(data)


# ------------------------------------------------------------------ without archd

def test_archctl_and_arch_runc_work_without_archd(make_archd, ctr_containers):
    c = ctr_containers
    a = make_archd()  # configured, never started
    r = archctl(a, "node", "drain")
    assert r.returncode == 6, r.returncode  # exit code 6: archd not reachable (exit_codes.h)
    assert "archd is not running" in r.stderr and "archctl container finalize" in r.stderr, r.stderr
    assert archctl(a, "node", "status").returncode == 6
    (cid,) = start_counters(c, 1, "noarchd")  # arch-runc creates it without archd
    out = archctl_json(a, "container", "finalize", "--deadline", "60")
    mine = [x for x in out["containers"] if x["id"] == cid]
    assert mine and mine[0]["result"] == "checkpointed", out
    assert c.delete(cid) == 137
    check_resumes(c, cid, mine[0]["detail"])


# ------------------------------------------------------------------ packaging

def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    skip_unless_binaries(archd_path())
    with open(UNIT) as f:
        text = f.read()
    assert "ExecStart=/usr/local/bin/archd" in text and "Type=simple" in text
    unit = tmp_path / "archd.service"
    unit.write_text(text.replace("/usr/local/bin/archd", archd_path()))
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if "archd.service" in line]
    assert r.returncode == 0 and not problems, f"{r.stdout}{r.stderr}"


# ------------------------------------------------------------------ periodic checkpoints

def test_periodic_checkpoints_then_a_crash_resumes_from_the_newest(make_archd, ctr_containers):
    """ARCH_CHECKPOINT_INTERVAL=2s (the node allows 1 s here): archd checkpoints the
    container every 2 s while it keeps running; a container without the variable is left
    alone (node default off). Then the node is lost without notice (archd gone, the
    container SIGKILLed): run again, the job resumes from the newest periodic generation."""
    c = ctr_containers
    a = make_archd(extra="[checkpoint]\nmin_interval = 1s\n").start()
    cid, other = checkpoint.new_id("periodic"), checkpoint.new_id("noperiod")
    c.run(cid, workloads.counter(COUNT), env=["ARCH_CHECKPOINT_INTERVAL=2s"])
    c.run(other, workloads.counter(COUNT))
    c.wait_lines(cid, COUNT, 3, workloads.parse_counter)

    def generations():
        return [x for x in c.checkpoints(cid) if x["state"] == "committed"]
    proc.wait_until(lambda: len(generations()) >= 2, 60, "two periodic checkpoints",
                    interval=0.2)
    assert c.runc_status(cid) == "running" and c.status(cid) == "RUNNING"
    n = len(workloads.parse_counter(c.read(cid, COUNT))[1])
    c.wait_lines(cid, COUNT, n + 3, workloads.parse_counter)  # it kept counting
    periodic = [e for e in a.events() if e["kind"] == "checkpoint" and e["id"] == cid]
    done = [e for e in periodic if e["outcome"] == "periodic"]
    assert len(done) >= 2 and all("frozen" in e["detail"] for e in done), periodic
    assert c.checkpoints(other) == [], "a container without an interval was checkpointed"
    assert a.stop() == 0, a.log_text()  # the node goes: archd first, then the container
    c.signal(cid, "SIGKILL")
    assert c.delete(cid) == 137
    newest = generations()[0]["path"]
    check_resumes(c, cid, newest)


def test_periodic_interval_below_the_node_minimum_is_raised_and_bad_values_refused(
        make_archd, ctr_containers):
    c = ctr_containers
    a = make_archd(extra="[checkpoint]\nmin_interval = 1h\n").start()
    fast, bad = checkpoint.new_id("fast"), checkpoint.new_id("badint")
    c.run(fast, workloads.counter(COUNT), env=["ARCH_CHECKPOINT_INTERVAL=1s"])
    c.run(bad, workloads.counter(COUNT), env=["ARCH_CHECKPOINT_INTERVAL=1s;rm -rf /"])

    def outcome(cid, what):
        return [e for e in a.events() if e["id"] == cid and e["outcome"] == what]
    proc.wait_until(lambda: outcome(fast, "periodic-interval") and outcome(bad, "periodic-refused"),
                    30, "archd to judge both intervals", interval=0.2)
    assert "raised to the node's min_interval 3600" in outcome(fast, "periodic-interval")[0]["detail"]
    assert "must be a duration" in outcome(bad, "periodic-refused")[0]["detail"]
    assert c.checkpoints(fast) == [] and c.checkpoints(bad) == []
