"""archd's two feeds, end to end: a spot interruption notice served by a loopback server
speaking the real IMDSv2 protocol drains the node (every running ARCH-enabled container
checkpointed, then resumed when created again), and containerd's event stream gives archd
every task's exit status, recorded where arch-runc reads it."""

import json
import os
import time

from archtest import checkpoint, proc
from archtest.archd import write_config
from archtest.fake_imds import FakeImds
from test_archd import archctl_json, check_resumes, make_archd, start_counters  # noqa: F401


def configure(a, extra):
    """Rewrites archd's config with extra [agent] lines (later keys win)."""
    a.config = write_config(os.path.join(a.base, "etc"), a.node, a.socket, a.state_file,
                            a.event_log, a.metrics_port, extra=extra)


def test_spot_notice_drains_the_node_and_containers_resume(make_archd, ctr_containers,
                                                           containerd_env):
    c = ctr_containers
    with FakeImds() as imds:
        a = make_archd(parallel=4)
        configure(a, f"imds_endpoint = {imds.endpoint}\nimds_poll_seconds = 1\n"
                     f"safety_margin_seconds = 10\ncontainerd_address = {containerd_env.ctd.address}\n")
        a.start()
        ids = start_counters(c, 3, "spot")
        proc.wait_until(lambda: a.status()["watcher"]["state"] == "polling", 15,
                        "archd's watcher to poll the metadata service")
        assert not a.status()["draining"]

        notice_time = imds.set_spot(action="terminate", in_seconds=120)
        t0 = time.monotonic()

        def drained():
            st = a.status()
            d = st.get("drain") or {}
            return st if st["draining"] and d.get("state") == "done" else None
        st = proc.wait_until(drained, 90, "the notice's drain to finish")
        elapsed = time.monotonic() - t0
        assert st["drain_kind"] == "notice" and "spot notice: terminate" in st["drain_reason"], st
        results = {x["id"]: x for x in st["drain"]["report"]["containers"]
                   if x["namespace"] == c.ns}
        assert sorted(results) == sorted(ids), st["drain"]
        assert all(x["result"] == "checkpointed" for x in results.values()), st["drain"]
        print(f"\nspot notice to {len(ids)} containers checkpointed: {elapsed:.2f} s "
              f"(poll interval 1 s; archd's own drain {st['drain']['report']['total_seconds']:.2f} s)")
        notices = [e for e in a.events() if e["kind"] == "notice"]
        assert len(notices) == 1 and notice_time in notices[0]["detail"], notices
        assert os.path.exists(a.flag)

        # The same notice polled again does not start a second drain.
        time.sleep(2.5)
        assert len([e for e in a.events() if e["kind"] == "notice"]) == 1

        assert archctl_json(a, "node", "undrain")["was_draining"] is True
        imds.clear_spot()
        for cid in ids:
            assert c.delete(cid) == 137
            check_resumes(c, cid, results[cid]["detail"])


def test_exit_statuses_are_recorded_for_arch_runc(make_archd, containerd_env, docker_env,
                                                  node_config):
    a = make_archd(metrics=False)
    configure(a, f"imds_endpoint =\ncontainerd_address = {containerd_env.ctd.address}\n")
    a.start()
    exits = os.path.join(node_config.state, "exits")
    ns = containerd_env.ns

    def recorded(ns_, cid):
        path = os.path.join(exits, ns_, cid)
        try:
            with open(path) as f:
                return json.load(f)["exit_status"]
        except (OSError, ValueError, KeyError):
            return None

    # ctr: 0, 3, and 137 (killed).
    cases = {checkpoint.new_id("exit0"): ("exit 0", 0), checkpoint.new_id("exit3"): ("exit 3", 3),
             checkpoint.new_id("kill"): ("sleep 600", 137)}
    try:
        for cid, (script, _) in cases.items():
            containerd_env.ctr("run", "-d", containerd_env.image, cid, "sh", "-c", script, check=True)
        kill_id = [cid for cid, (_, s) in cases.items() if s == 137][0]
        containerd_env.ctd.wait_status(ns, kill_id, "RUNNING")
        containerd_env.ctr("task", "kill", "-s", "SIGKILL", kill_id, check=True)
        for cid, (_, status) in cases.items():
            proc.wait_until(lambda: recorded(ns, cid) is not None, 20, f"the exit of {cid}",
                            interval=0.05)
            assert recorded(ns, cid) == status, (cid, recorded(ns, cid))
    finally:
        for cid in cases:
            containerd_env.ctr("task", "delete", "-f", cid)
            containerd_env.ctr("containers", "rm", cid)

    # Docker (namespace moby, full container ids): 0, 3 and 137.
    names = {checkpoint.new_id("d0"): ("exit 0", 0), checkpoint.new_id("d3"): ("exit 3", 3),
             checkpoint.new_id("dk"): ("sleep 600", 137)}
    try:
        for name, (script, _) in names.items():
            r = docker_env.docker("run", "-d", "--name", name, docker_env.image, "sh", "-c", script)
            assert r.returncode == 0, r.stderr
        kill_name = [n for n, (_, s) in names.items() if s == 137][0]
        docker_env.docker("kill", kill_name)
        for name, (_, status) in names.items():
            full = docker_env.dockerd.inspect(name, "{{.Id}}")
            proc.wait_until(lambda: recorded("moby", full) is not None, 20,
                            f"the exit of {name}", interval=0.05)
            assert recorded("moby", full) == status, (name, recorded("moby", full))
    finally:
        for name in names:
            docker_env.docker("rm", "-f", name)
    assert a.stop() == 0, a.log_text()
