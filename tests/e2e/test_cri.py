"""Kubernetes through CRI: containerd's CRI plugin driven over gRPC exactly as the kubelet
drives it (archtest/cri), with the RuntimeClass handler `arch` running arch-runc.

A Job's pod is drained (`archctl container finalize`): its container is checkpointed and
ends with 137, the kubelet stops and removes the pod, and the Job's next pod (new uid, new
sandbox, new network namespace, same pod namespace and ARCH_JOB_ID) resumes the counter
where it stopped. The checkpoint belongs to `k8s.io+<pod namespace>`; a pod of another
pod namespace naming the same ARCH_JOB_ID starts fresh. An eviction (StopContainer with a
grace period, ARCH_CHECKPOINT_ON_STOP=1) checkpoints too. A StatefulSet-style pod (stable
name, no ARCH_JOB_ID) resumes through the pod identity key k8s-<ns>-<pod>-<container>.
deploy/kubernetes/ (RuntimeClass, node installer) is checked field by field.
A pod of two ARCH-enabled app containers is one group (pod.<pod name>): drained as one
group generation and restored together in the pod's next incarnation; a pod whose
annotations and container environment claim another pod's group is never a member.
"""

import json
import os
import random
import secrets
import shutil
import time

import pytest

from archtest import checkpoint, cri, proc, workloads

# The last 5 characters of a generated pod name come from this alphabet (Kubernetes'
# generateName); job_identity treats such names as unstable.
GENERATED = "bcdfghjklmnpqrstvwxz2456789"
COUNTER = "/data/count.txt"


def generated_name(prefix):
    return prefix + "-" + "".join(random.choice(GENERATED) for _ in range(5))


@pytest.fixture(scope="module")
def cri_node(e2e_dir, node_config, workload_image, archctl_cli, arch_runc):
    why = cri.missing_requirements()
    if why:
        pytest.skip(why)
    from conftest import SESSION
    node = cri.CriNode(os.path.join(e2e_dir, "cri"), node_config, arch_runc, archctl_cli.path,
                       SESSION)
    try:
        pause = cri.build_pause_image(os.path.join(e2e_dir, "cri"))
        node.start({cri.PAUSE_IMAGE: pause, workload_image.name: workload_image.oci})
        yield node
    finally:
        node.stop()
    left = node.leftovers()
    assert not left, f"the CRI node left behind: {left}"


class Pods:
    """Per test: the pods a test made (removed afterwards) and the store keys it used."""

    def __init__(self, node, archctl, store):
        self.node = node
        self.archctl = archctl
        self.store = store
        self.keys = []  # (owner, key)

    def run(self, namespace, name, envs, container="sim"):
        """A pod with one container running the counter; returns (pod id, sandbox config,
        container id) once the container is RUNNING."""
        sandbox = self.node.sandbox_config(name, namespace,
                                           labels={"app": "arch-cri-test"})
        pod_id = self.node.run_pod(sandbox)
        envs = dict({"ARCH_ENABLE": "1"}, **envs)
        cid = self.node.start_container(pod_id, sandbox, container, workloads.IMAGE_NAME,
                                        workloads.counter(COUNTER), envs)
        status = self.node.client.container_status(cid)
        assert status.state == self.node.pb.CONTAINER_RUNNING, status
        return pod_id, sandbox, cid

    def remove(self, pod_id):
        self.node.remove_pod(pod_id)
        self.node.pods.pop(pod_id, None)

    def log(self, cid):
        """arch-runc's messages in the container's bundle log.json."""
        path = os.path.join(self.node.bundle(cid), "log.json")
        return checkpoint.messages(checkpoint.json_lines(checkpoint.read_text(path)))

    def diagnostics(self, cid):
        parts = ["--- bundle log\n" + "\n".join(self.log(cid))]
        if os.path.exists(self.archctl_log()):
            parts.append("--- node log (tail)\n" + checkpoint.read_text(self.archctl_log(), 6000))
        parts.append("--- containerd log (tail)\n" + self.node.ctd.log_tail())
        return "\n".join(parts)

    def archctl_log(self):
        return self.node.node_config.log_file

    def counter(self, cid, minimum, timeout=30):
        """(start uuid, values) once the counter holds `minimum` values (read by ExecSync)."""
        last = [None]

        def enough():
            text = self.node.read(cid, COUNTER)
            try:
                parsed = workloads.parse_counter(text or "")
            except AssertionError:
                return False
            last[0] = parsed
            return parsed if len(parsed[1]) >= minimum else False

        try:
            return proc.wait_until(enough, timeout, f"{cid} to count to {minimum}", interval=0.1)
        except proc.WaitTimeout as e:
            raise AssertionError(f"{e}; last read {last[0]!r}\n{self.diagnostics(cid)}")

    def wait_exited(self, cid, timeout=30):
        """The container's ContainerStatus once the kubelet would see it exited."""
        def exited():
            status = self.node.client.container_status(cid)
            return status if status.state == self.node.pb.CONTAINER_EXITED else None

        return proc.wait_until(exited, timeout, f"{cid} to exit", interval=0.05)

    def cleanup(self):
        for pod_id in list(self.node.pods):
            try:
                self.remove(pod_id)
            except Exception:
                pass
        for owner, key in self.keys:
            checkpoint.remove_key(self.store, owner, key)


@pytest.fixture
def pods(cri_node, archctl_cli, node_config):
    p = Pods(cri_node, archctl_cli, node_config.store)
    yield p
    p.cleanup()


def finalize_one(pods, cid):
    """`archctl container finalize` (a node drain); returns our container's result."""
    out = pods.archctl.json("container", "finalize", "--deadline", "100")
    mine = [r for r in out["containers"] if r["id"] == cid]
    assert len(mine) == 1, out
    assert mine[0]["namespace"] == cri.CRI_NAMESPACE, mine
    assert mine[0]["result"] == "checkpointed", f"{mine}\n{pods.diagnostics(cid)}"
    return mine[0]["detail"]


def test_drained_job_pod_resumes_in_its_next_pod(pods):
    pb = pods.node.pb
    namespace, job = f"team-{secrets.token_hex(3)}", f"sim-{secrets.token_hex(3)}"
    owner = f"k8s.io+{namespace}"
    pods.keys.append((owner, job))
    envs = {"ARCH_JOB_ID": job}

    pod1, sandbox1, cid1 = pods.run(namespace, generated_name(job), envs)
    netns1 = pods.node.pods[pod1]
    uuid1, before = pods.counter(cid1, 10)

    # The drain: checkpointed, then ended with SIGKILL's 137, as the kubelet sees it.
    ckpt = finalize_one(pods, cid1)
    status = pods.wait_exited(cid1)
    assert status.exit_code == 137, status
    listed = pods.archctl.checkpoints(owner, job)
    assert [(c["namespace"], c["key"], c["state"]) for c in listed] == [
        (owner, job, "committed")], listed
    assert ckpt.startswith(os.path.join(pods.store, owner, job) + "/"), ckpt
    pods.remove(pod1)  # the kubelet: StopContainer, RemoveContainer, StopPodSandbox, Remove...

    # The Job's next pod: new name and uid, a new sandbox and network namespace.
    pod2, sandbox2, cid2 = pods.run(namespace, generated_name(job), envs)
    assert sandbox2.metadata.uid != sandbox1.metadata.uid and pod2 != pod1
    netns2 = pods.node.pods[pod2]
    assert netns1 and netns2 and netns1 != netns2, (netns1, netns2)
    log = pods.log(cid2)
    assert any("restored from " + ckpt in m for m in log), (
        f"{cid2} was not restored from {ckpt}\n{pods.diagnostics(cid2)}")

    at_checkpoint = checkpoint.diff_member(ckpt, COUNTER)
    assert at_checkpoint is not None, f"{COUNTER} is not in the checkpoint's rootfs diff"
    uuid0, values0 = workloads.parse_counter(at_checkpoint.decode())
    assert uuid0 == uuid1 and len(values0) >= len(before)
    workloads.check_sequence(values0, "the counter at the checkpoint")
    uuid, values = pods.counter(cid2, len(values0) + 10)
    assert uuid == uuid1, "the counter started again (new start line) instead of resuming"
    workloads.check_sequence(values, "the counter in the next pod")
    # The kubelet's view of the restored container.
    status = pods.node.client.container_status(cid2)
    assert status.state == pb.CONTAINER_RUNNING and status.metadata.name == "sim", status
    info = pods.node.client.pod_sandbox_status(pod2).status
    assert info.state == pb.SANDBOX_READY and info.network.ip, info
    assert info.runtime_handler == "arch", info
    # The sandbox (pause) ran through arch-runc too, untouched (no ARCH_ENABLE).
    sandbox_log = pods.log(pod2)
    assert any(m.startswith(f"arch-runc: create {pod2}: pass-through") for m in sandbox_log), (
        sandbox_log)


def test_evicted_pod_with_checkpoint_on_stop_resumes(pods):
    """An eviction (`kubectl drain`): the kubelet's StopContainer with the pod's grace period
    sends SIGTERM; with ARCH_CHECKPOINT_ON_STOP=1 arch-runc checkpoints instead, the
    container ends with 137 well before the grace period, and the next pod resumes."""
    namespace, job = f"evict-{secrets.token_hex(3)}", f"sim-{secrets.token_hex(3)}"
    owner = f"k8s.io+{namespace}"
    pods.keys.append((owner, job))
    envs = {"ARCH_JOB_ID": job, "ARCH_CHECKPOINT_ON_STOP": "1"}

    pod1, _, cid1 = pods.run(namespace, generated_name(job), envs)
    uuid1, _ = pods.counter(cid1, 5)
    started = time.monotonic()
    pods.node.client.stop_container(cid1, timeout=30)
    took = time.monotonic() - started
    status = pods.node.client.container_status(cid1)
    assert status.state == pods.node.pb.CONTAINER_EXITED and status.exit_code == 137, status
    assert took < 25, f"StopContainer took {took:.1f}s: the grace period ran out (no checkpoint?)"
    found = [c for c in pods.archctl.checkpoints(owner, job) if c["state"] == "committed"]
    assert len(found) == 1, f"{pods.archctl.checkpoints(owner, job)}\n{pods.diagnostics(cid1)}"
    pods.remove(pod1)

    pod2, _, cid2 = pods.run(namespace, generated_name(job), envs)
    ckpt = found[0]["path"]
    assert any("restored from " + ckpt in m for m in pods.log(cid2)), pods.diagnostics(cid2)
    n = len(workloads.parse_counter(checkpoint.diff_member(ckpt, COUNTER).decode())[1])
    uuid, values = pods.counter(cid2, n + 5)
    assert uuid == uuid1, "the evicted pod's counter started again instead of resuming"
    workloads.check_sequence(values, "the counter after the eviction")


def test_other_pod_namespace_with_the_same_job_id_starts_fresh(pods):
    """A tenant in another pod namespace names the victim's ARCH_JOB_ID: the checkpoint is
    the victim namespace's (k8s.io+<ns>), so the attacker's pod starts fresh, and the
    victim's checkpoint stays as it was."""
    victim_ns, attacker_ns = f"victim-{secrets.token_hex(3)}", f"attacker-{secrets.token_hex(3)}"
    job = f"sim-{secrets.token_hex(3)}"
    pods.keys += [(f"k8s.io+{victim_ns}", job), (f"k8s.io+{attacker_ns}", job)]
    envs = {"ARCH_JOB_ID": job}

    pod1, _, cid1 = pods.run(victim_ns, generated_name(job), envs)
    uuid1, _ = pods.counter(cid1, 5)
    out = pods.archctl.json("container", "checkpoint", f"{cri.CRI_NAMESPACE}/{cid1}")
    ckpt = out["checkpoint"]
    assert ckpt.startswith(os.path.join(pods.store, f"k8s.io+{victim_ns}", job) + "/"), out
    assert pods.wait_exited(cid1).exit_code == 137
    pods.remove(pod1)

    pod2, _, cid2 = pods.run(attacker_ns, generated_name(job), envs)
    uuid2, values = pods.counter(cid2, 5)
    assert uuid2 != uuid1, "the other namespace's pod resumed the victim's counter"
    workloads.check_sequence(values, "the attacker's fresh counter")
    log = pods.log(cid2)
    assert not any("restored from" in m for m in log), log
    assert not pods.archctl.checkpoints(f"k8s.io+{attacker_ns}", job)
    victim = pods.archctl.checkpoints(f"k8s.io+{victim_ns}", job)
    assert [c["state"] for c in victim] == ["committed"], victim


def test_statefulset_pod_resumes_by_its_pod_identity(pods):
    """A stable pod name (a StatefulSet's web-0) and no ARCH_JOB_ID: the key is
    k8s-<pod namespace>-<pod name>-<container name> from the CRI annotations."""
    namespace = f"sts-{secrets.token_hex(3)}"
    name, container = "trainer-0", "train"
    owner, key = f"k8s.io+{namespace}", f"k8s-{namespace}-{name}-{container}"
    pods.keys.append((owner, key))

    pod1, _, cid1 = pods.run(namespace, name, {}, container=container)
    uuid1, _ = pods.counter(cid1, 5)
    listed = [c for c in pods.archctl.json("container", "list") if c.get("id") == cid1]
    assert listed and listed[0]["owner"] == owner and listed[0]["key"] == key, listed
    ckpt = finalize_one(pods, cid1)
    assert pods.wait_exited(cid1).exit_code == 137
    pods.remove(pod1)

    pod2, _, cid2 = pods.run(namespace, name, {}, container=container)
    assert any("restored from " + ckpt in m for m in pods.log(cid2)), pods.diagnostics(cid2)
    n = len(workloads.parse_counter(checkpoint.diff_member(ckpt, COUNTER).decode())[1])
    uuid, values = pods.counter(cid2, n + 5)
    assert uuid == uuid1, "the StatefulSet pod started again instead of resuming"
    workloads.check_sequence(values, "the StatefulSet pod's counter")


def run_pod_of(pods, namespace, name, containers, sandbox_annotations=None):
    """A pod with several containers, each running the counter, created one after another
    as the kubelet does (CreateContainer and StartContainer of one before the next);
    returns (pod id, {container name: container id})."""
    sandbox = pods.node.sandbox_config(name, namespace, labels={"app": "arch-cri-test"})
    for k, v in (sandbox_annotations or {}).items():
        sandbox.annotations[k] = v
    pod_id = pods.node.run_pod(sandbox)
    ids = {}
    for cname, envs in containers.items():
        ids[cname] = pods.node.start_container(pod_id, sandbox, cname, workloads.IMAGE_NAME,
                                               workloads.counter(COUNTER),
                                               dict({"ARCH_ENABLE": "1"}, **envs))
    for cid in ids.values():
        status = pods.node.client.container_status(cid)
        assert status.state == pods.node.pb.CONTAINER_RUNNING, status
    return pod_id, ids


def pod_groups(pods, owner):
    return {g["group"]: g for g in pods.archctl.json("group", "list") if g["owner"] == owner}


def test_pod_of_two_is_one_group_on_drain_and_resumes_together(pods):
    """[groups] kubernetes_pods (default on): the two ARCH-enabled app containers of one pod
    are the group pod.<pod name>, drained as one unit (one group generation naming both),
    and the pod's next incarnation (new uid, new sandbox) restores both from it, each
    created after the other as the kubelet does, both counters going on."""
    namespace, name = f"grp-{secrets.token_hex(3)}", "trainer-0"
    owner, group = f"k8s.io+{namespace}", "pod.trainer-0"
    keys = {c: f"k8s-{namespace}-{name}-{c}" for c in ("main", "side")}
    pods.keys += [(owner, k) for k in keys.values()] + [(owner, "arch-group." + group)]

    pod1, ids1 = run_pod_of(pods, namespace, name, {"main": {}, "side": {}})
    start = {c: pods.counter(cid, 5)[0] for c, cid in ids1.items()}
    listed = pod_groups(pods, owner)
    assert set(listed) == {group}, listed
    assert sorted(m["id"] for m in listed[group]["members"]) == sorted(ids1.values()), listed
    # A member alone is refused: it would break the group's generation.
    alone = pods.archctl.run("container", "checkpoint", f"{cri.CRI_NAMESPACE}/{ids1['main']}")
    assert alone.returncode != 0 and f"is a member of group {group}" in alone.stderr, alone

    out = pods.archctl.json("container", "finalize", "--deadline", "100")
    mine = {r["id"]: r for r in out["containers"] if r["id"] in ids1.values()}
    assert len(mine) == 2, out
    for r in mine.values():
        assert r["result"] == "checkpointed", f"{r}\n{pods.diagnostics(r['id'])}"
        assert any(f"group {group} generation" in n for n in r.get("notes", [])), r
    print("\npod group drained: " + [n for n in r["notes"] if "group " in n][0])
    gdir = os.path.join(pods.store, owner, "arch-group." + group)
    records = [x for x in os.listdir(gdir) if x.startswith("ckpt-")]
    assert len(records) == 1, records
    with open(os.path.join(gdir, records[0], "group.json")) as f:
        doc = json.load(f)
    assert sorted(m["key"] for m in doc["members"]) == sorted(keys.values()), doc
    ckpts = {}
    for c, cid in ids1.items():
        assert pods.wait_exited(cid).exit_code == 137
        listed = [x for x in pods.archctl.checkpoints(owner, keys[c]) if x["state"] == "committed"]
        assert len(listed) == 1, listed
        ckpts[c] = listed[0]["path"]
    pods.remove(pod1)

    pod2, ids2 = run_pod_of(pods, namespace, name, {"main": {}, "side": {}})
    for c, cid in ids2.items():
        log = pods.log(cid)
        assert any("restored from " + ckpts[c] in m for m in log), pods.diagnostics(cid)
        assert any(f"group {group} generation" in m for m in log), log
        n = len(workloads.parse_counter(checkpoint.diff_member(ckpts[c], COUNTER).decode())[1])
        uuid, values = pods.counter(cid, n + 5)
        assert uuid == start[c], f"{c} started again instead of resuming"
        workloads.check_sequence(values, f"{c}'s counter in the next pod")


def test_a_container_cannot_join_another_pods_group(pods):
    """Attack: a pod of the same namespace whose container names the victim pod's group in
    ARCH_GROUP and whose pod and container annotations claim the victim's sandbox: the
    membership comes from containerd's CRI annotations (the kubelet's request), never from
    what the pod or its container say: the victim's group holds only its own two, a group
    checkpoint never freezes the intruder, and its ARCH_GROUP is refused."""
    namespace, name = f"grpatk-{secrets.token_hex(3)}", "trainer-0"
    owner, group = f"k8s.io+{namespace}", "pod.trainer-0"
    pods.keys += [(owner, f"k8s-{namespace}-{name}-{c}") for c in ("main", "side")]
    pods.keys += [(owner, "arch-group." + group), (owner, "evil-job")]
    victim, ids = run_pod_of(pods, namespace, name, {"main": {}, "side": {}})
    claim = {"io.kubernetes.cri.sandbox-id": victim, "io.kubernetes.cri.sandbox-name": name,
             "io.kubernetes.cri.container-type": "container"}
    _, evil = run_pod_of(pods, namespace, generated_name("evil"),
                         {"evil": {"ARCH_GROUP": group, "ARCH_JOB_ID": "evil-job"},
                          "evil2": {"ARCH_JOB_ID": "evil-job2"}},
                         sandbox_annotations=claim)
    pods.keys.append((owner, "evil-job2"))
    listed = pod_groups(pods, owner)
    assert sorted(m["id"] for m in listed[group]["members"]) == sorted(ids.values()), listed
    assert all(m["id"] not in evil.values() for g in listed.values() for m in g["members"]), (
        listed)
    r = pods.archctl.run("group", "list")
    assert "reserved for Kubernetes pod groups" in r.stderr, r.stderr
    out = pods.archctl.json("group", "checkpoint", f"{owner}/{group}", "--leave-running")
    assert sorted(m["id"] for m in out["members"]) == sorted(ids.values()), out
    for cid in list(ids.values()) + list(evil.values()):
        status = pods.node.client.container_status(cid)
        assert status.state == pods.node.pb.CONTAINER_RUNNING, status
    assert not [x for x in pods.archctl.checkpoints(owner, "evil-job") if x["state"] == "committed"]


def test_cri_version_and_handler(cri_node):
    """The node answers as containerd's CRI v1, and an unknown RuntimeClass handler is
    refused (the pod is not silently run with the default runtime)."""
    v = cri_node.client.version()
    assert v.runtime_name == "containerd" and v.runtime_api_version == "v1", v
    config = cri_node.sandbox_config("nohandler", "default")
    with pytest.raises(cri_node.client.grpc.RpcError):
        cri_node.client.run_pod_sandbox(config, "no-such-handler")


# ------------------------------------------------------------------ deploy/kubernetes

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "deploy", "kubernetes")


def load_manifests():
    yaml = pytest.importorskip("yaml", reason="python3-yaml is needed to read the manifests")
    docs = {}
    for name in sorted(os.listdir(DEPLOY)):
        if name.endswith(".yaml") and name != "kustomization.yaml":
            with open(os.path.join(DEPLOY, name)) as f:
                for doc in yaml.safe_load_all(f):
                    if doc:
                        docs[(doc["kind"], doc["metadata"]["name"])] = doc
    with open(os.path.join(DEPLOY, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    return docs, kustomization


def test_kubernetes_manifests(tmp_path):
    """deploy/kubernetes: the RuntimeClass names the handler `archctl install containerd`
    adds, and the node installer DaemonSet is complete (selector, host access, the script
    it runs and the volumes it mounts). kubectl cannot validate offline (it asks the API
    server), so the fields are checked here; `kubectl kustomize` renders them when present."""
    docs, kustomization = load_manifests()
    rc = docs[("RuntimeClass", "arch")]
    assert rc["apiVersion"] == "node.k8s.io/v1" and rc["handler"] == "arch", rc

    # The handler is the runtime name archctl writes into containerd's config.
    from conftest import archctl_path
    archctl = archctl_path()
    if os.access(archctl, os.X_OK):
        config = tmp_path / "config.toml"
        config.write_text("version = 2\n")
        text = cri.install_arch_handler(archctl, str(config), "/usr/bin/arch-runc")
        assert f"containerd.runtimes.{rc['handler']}]" in text, text

    ns = docs[("Namespace", "arch-system")]
    ds = docs[("DaemonSet", "arch-node-installer")]
    assert ds["apiVersion"] == "apps/v1" and ds["metadata"]["namespace"] == ns["metadata"]["name"]
    spec, pod = ds["spec"], ds["spec"]["template"]["spec"]
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items(), (spec["selector"], labels)
    assert pod["hostPID"] is True, "the installer enters the host's namespaces (nsenter -t 1)"
    (container,) = pod["containers"]
    assert container["securityContext"]["privileged"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        assert mount["name"] in volumes, f"volume {mount['name']} is mounted but not defined"
    assert volumes["host-staging"]["hostPath"]["path"] == "/var/lib/arch-installer"
    assert volumes["node-key"]["secret"]["optional"] is True

    script = container["command"][-1]
    installer = os.path.join(DEPLOY, "installer")
    local = os.path.join(installer, os.path.basename(script))
    assert os.path.isfile(local), f"{script} is not shipped in deploy/kubernetes/installer"
    with open(os.path.join(installer, "Dockerfile")) as f:
        dockerfile = f.read()
    assert f"install.sh {os.path.dirname(script)}/" in dockerfile, dockerfile
    with open(local) as f:
        text = f.read()
    for step in ("apt-get install", "archctl install containerd", "systemctl restart containerd",
                 "systemctl enable --now archd.service", "archctl key import"):
        assert step in text, f"install.sh does not run {step!r}"
    assert proc.run(["sh", "-n", local]).returncode == 0, "install.sh has a syntax error"

    files = {f for f in os.listdir(DEPLOY) if f.endswith(".yaml") and f != "kustomization.yaml"}
    assert set(kustomization["resources"]) == files, kustomization
    kubectl = shutil.which("kubectl")
    if kubectl:
        r = proc.run([kubectl, "kustomize", DEPLOY], timeout=60)
        assert r.returncode == 0, r.stderr
        rendered = r.stdout
        for kind in ("Namespace", "RuntimeClass", "DaemonSet"):
            assert f"kind: {kind}" in rendered, rendered
