"""Kubernetes' view of a node: containerd's CRI plugin driven over its gRPC API as the
kubelet drives it (RunPodSandbox, CreateContainer, StartContainer ...).

api.proto holds the subset of the CRI (runtime.v1) the tests call; it is compiled with
`protoc --python_out` once per session and called through grpc's generic API, so no
generated gRPC stubs (grpc_tools) are needed. `CriNode` is a private containerd with the
CRI plugin on: runtime handler `arch` (runc v2 shim running arch-runc through a wrapper
that names the node config), CNI bridge + host-local on a private bridge and subnet, and a
local pause image as the sandbox image (never pulled). Everything it starts is stopped by
pid; pods, network namespaces, the bridge link, cgroups and mounts are removed afterwards.
"""

import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys

from .. import daemons, image, proc, workloads

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "api.proto")
PAUSE_SOURCE = os.path.join(HERE, "pause.c")
PAUSE_IMAGE = "arch.test/pause:1"
CRI_NAMESPACE = "k8s.io"
CNI_BIN_DIR = "/usr/lib/cni"
CNI_CACHE = "/var/lib/cni/results"  # libcni's cache (containerd's CRI keeps the default)
SERVICE = "/runtime.v1.RuntimeService/"
IMAGE_SERVICE = "/runtime.v1.ImageService/"

_api = None


def missing_requirements():
    """Why the CRI tests cannot run here ("" when they can)."""
    if os.geteuid() != 0:
        return "needs root (containerd's CRI plugin, CNI and runc)"
    if importlib.util.find_spec("grpc") is None:
        return "python3-grpcio is not installed (no module grpc)"
    if not shutil.which("protoc"):
        return "protoc (protobuf-compiler) is not installed"
    for plugin in ("bridge", "host-local", "loopback"):
        if not os.access(os.path.join(CNI_BIN_DIR, plugin), os.X_OK):
            return f"CNI plugin {CNI_BIN_DIR}/{plugin} is missing (containernetworking-plugins)"
    if not shutil.which("ip"):
        return "iproute2's ip is missing"
    return ""


def api(cache_dir):
    """The compiled CRI messages (module api_pb2), protoc'd into cache_dir once per process."""
    global _api
    if _api is None:
        os.makedirs(cache_dir, exist_ok=True)
        r = subprocess.run(["protoc", f"--proto_path={HERE}", f"--python_out={cache_dir}", PROTO],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"protoc {PROTO} failed:\n{r.stderr}")
        spec = importlib.util.spec_from_file_location("archtest_cri_api_pb2",
                                                      os.path.join(cache_dir, "api_pb2.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        _api = module
    return _api


class Client:
    """The kubelet's side of the CRI: one unix-socket channel, one method per RPC."""

    def __init__(self, socket, pb):
        import grpc
        self.grpc = grpc
        self.pb = pb
        self.channel = grpc.insecure_channel("unix://" + socket)

    def close(self):
        self.channel.close()

    def call(self, method, request, timeout=60, service=SERVICE):
        response_type = getattr(self.pb, method + "Response")
        rpc = self.channel.unary_unary(service + method,
                                       request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=response_type.FromString)
        return rpc(request, timeout=timeout)

    def version(self):
        return self.call("Version", self.pb.VersionRequest(version="v1"), timeout=5)

    def image_status(self, name):
        """The image as the CRI plugin knows it (its id is "" when it does not)."""
        req = self.pb.ImageStatusRequest(image=self.pb.ImageSpec(image=name))
        return self.call("ImageStatus", req, timeout=10, service=IMAGE_SERVICE).image

    def run_pod_sandbox(self, config, handler):
        req = self.pb.RunPodSandboxRequest(config=config, runtime_handler=handler)
        return self.call("RunPodSandbox", req, timeout=120).pod_sandbox_id

    def stop_pod_sandbox(self, pod_id):
        self.call("StopPodSandbox", self.pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))

    def remove_pod_sandbox(self, pod_id):
        self.call("RemovePodSandbox", self.pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))

    def pod_sandbox_status(self, pod_id, verbose=False):
        return self.call("PodSandboxStatus",
                         self.pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=verbose))

    def create_container(self, pod_id, config, sandbox_config):
        req = self.pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=config,
                                             sandbox_config=sandbox_config)
        return self.call("CreateContainer", req, timeout=120).container_id

    def start_container(self, cid):
        self.call("StartContainer", self.pb.StartContainerRequest(container_id=cid), timeout=120)

    def stop_container(self, cid, timeout=0):
        self.call("StopContainer", self.pb.StopContainerRequest(container_id=cid, timeout=timeout),
                  timeout=timeout + 60)

    def remove_container(self, cid):
        self.call("RemoveContainer", self.pb.RemoveContainerRequest(container_id=cid))

    def container_status(self, cid):
        return self.call("ContainerStatus",
                         self.pb.ContainerStatusRequest(container_id=cid)).status

    def list_containers(self, pod_id=""):
        req = self.pb.ListContainersRequest(filter=self.pb.ContainerFilter(pod_sandbox_id=pod_id))
        return list(self.call("ListContainers", req).containers)

    def exec_sync(self, cid, cmd, timeout=30):
        return self.call("ExecSync",
                         self.pb.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=timeout),
                         timeout=timeout + 30)


# ------------------------------------------------------------------ node setup

def compile_pause(out_dir):
    return workloads.compile_static(PAUSE_SOURCE, out_dir, "pause")


def build_pause_image(out_dir):
    """An OCI archive of PAUSE_IMAGE: the busybox layer plus /pause, Cmd ["/pause"]."""
    with open(compile_pause(out_dir), "rb") as f:
        binary = f.read()
    layer = image.build_layer(extra=(("pause", "file", binary, 0o755),))
    path = os.path.join(out_dir, "pause-oci.tar")
    image.write_oci_archive(path, layer, PAUSE_IMAGE, cmd=["/pause"])
    return path


def write_cni_config(conf_dir, network, bridge, subnet, data_dir):
    """A bridge + host-local conflist (no masquerade, no iptables) on a private bridge."""
    os.makedirs(conf_dir, mode=0o755, exist_ok=True)
    conf = {
        "cniVersion": "0.4.0",
        "name": network,
        "plugins": [{
            "type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
            "hairpinMode": False,
            "ipam": {"type": "host-local", "dataDir": data_dir,
                     "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}]},
        }],
    }
    path = os.path.join(conf_dir, "10-arch-cri.conflist")
    with open(path, "w") as f:
        json.dump(conf, f, indent=2)
    return path


def cri_plugin_toml(runc_root, cni_conf_dir):
    """containerd 1.6's CRI plugin section with the default handler `runc` only; the
    handler `arch` is added by `archctl install containerd` (install_arch_handler)."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    runtimes = f"{cri}.containerd.runtimes"
    return f"""version = 2

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{runtimes}.runc]
  runtime_type = "io.containerd.runc.v2"
[{runtimes}.runc.options]
  Root = "{runc_root}"
[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{cni_conf_dir}"
  max_conf_num = 1
"""


def cri_plugin_toml_v3(runc_root, cni_conf_dir):
    """The same for containerd 2.x (config version 3): CRI is split into the images, runtime
    and gRPC plugins."""
    images = "plugins.'io.containerd.cri.v1.images'"
    runtime = "plugins.'io.containerd.cri.v1.runtime'"
    runtimes = f"{runtime}.containerd.runtimes"
    return f"""version = 3

[{images}]
  snapshotter = "overlayfs"
[{images}.pinned_images]
  sandbox = "{PAUSE_IMAGE}"
[{runtime}]
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
[{runtime}.containerd]
  default_runtime_name = "runc"
[{runtimes}.runc]
  runtime_type = "io.containerd.runc.v2"
[{runtimes}.runc.options]
  Root = "{runc_root}"
[{runtime}.cni]
  bin_dirs = ["{CNI_BIN_DIR}"]
  conf_dir = "{cni_conf_dir}"
  max_conf_num = 1
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
"""


def install_arch_handler(archctl, path, arch_runc):
    """`archctl install containerd --config path --arch-runc arch_runc` (what a node's
    operator runs); returns the edited config without its `version` line, for
    daemons.Containerd's cri_config."""
    r = proc.run([archctl, "install", "containerd", "--config", path, "--arch-runc", arch_runc],
                 timeout=30, env=dict(os.environ, ARCH_CONFIG="/nonexistent"))
    assert r.returncode == 0, f"archctl install containerd failed: {r.stdout}\n{r.stderr}"
    with open(path) as f:
        text = f.read()
    assert "runtimes.arch" in text, text
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.startswith("version"))


def _cgroup_dirs_under(name):
    """Every cgroup directory /<name>/... in every hierarchy, deepest first."""
    root = "/sys/fs/cgroup"
    tops = [os.path.join(root, name)]
    try:
        tops += [os.path.join(root, c, name) for c in os.listdir(root)]
    except OSError:
        pass
    found = []
    for top in tops:
        if os.path.isdir(top) and not os.path.islink(top):
            for d, _, _ in os.walk(top):
                found.append(d)
    return sorted(set(found), key=len, reverse=True)


def remove_cgroup_tree(name):
    for d in _cgroup_dirs_under(name):
        try:
            os.rmdir(d)
        except OSError:
            pass


class CriNode:
    """A private containerd with the CRI plugin on and the pods started through it."""

    def __init__(self, base, node_config, arch_runc, archctl, session):
        self.base = base
        self.node_config = node_config  # conftest.NodeConfig
        self.session = session
        self.bridge = f"archcri{session}"[:15]
        # 10.200-10.239 . x . 0/24: away from docker0 (172.17/16) and podman (10.88/16)
        n = int(session, 16)
        self.subnet = f"10.{200 + n % 40}.{(n >> 8) % 256}.0/24"
        self.cgroup_root = f"arch-cri-{session}"
        self.cni_conf = os.path.join(base, "cni-conf")
        self.cni_data = os.path.join(base, "cni-data")
        self.runc_root = os.path.join(base, "runc-root")
        self.logs = os.path.join(base, "pod-logs")
        self.wrapper = daemons.config_wrapper(os.path.join(base, "bin", "arch-runc"),
                                              node_config.path, arch_runc)
        env_path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        self.archctl = archctl
        self.ctd = daemons.Containerd(os.path.join(base, "containerd"), env={"PATH": env_path})
        self.client = None
        self.pb = None
        self.pods = {}  # pod sandbox id -> network namespace path (None until known)

    # ---- lifecycle
    def start(self, images):
        """Starts containerd and imports `images` ({name: OCI archive}) into k8s.io; returns
        once the CRI plugin knows each by name (so the sandbox image is never pulled)."""
        os.makedirs(self.runc_root, mode=0o700, exist_ok=True)
        os.makedirs(self.logs, mode=0o755, exist_ok=True)
        write_cni_config(self.cni_conf, self.network(), self.bridge, self.subnet,
                         self.cni_data)
        self.pb = api(os.path.join(self.base, "proto"))
        engine_config = os.path.join(self.base, "cri-config.toml")
        with open(engine_config, "w") as f:
            toml = cri_plugin_toml_v3 if daemons.containerd_config_version() >= 3 else cri_plugin_toml
            f.write(toml(self.runc_root, self.cni_conf))
        self.ctd.cri_config = install_arch_handler(self.archctl, engine_config, self.wrapper)
        self.ctd.start()
        for archive in images.values():
            self.ctd.ctr("images", "import", archive, ns=CRI_NAMESPACE, check=True, timeout=120)
        self.client = Client(self.ctd.address, self.pb)
        proc.wait_until(self._answers, 30, "the CRI plugin to answer Version", interval=0.05)
        for name in images:
            proc.wait_until(lambda: self.client.image_status(name).id, 30,
                            f"the CRI plugin to know image {name}", interval=0.05)

    def _answers(self):
        try:
            return self.client.version().runtime_api_version == "v1"
        except self.client.grpc.RpcError:
            return False

    def stop(self):
        if self.client is not None:
            for pod_id in list(self.pods):
                try:
                    self.remove_pod(pod_id)
                except Exception:  # best effort: the sweeps below still run
                    pass
            self.client.close()
            self.client = None
        self.ctd.stop()
        for netns in [p for p in self.pods.values() if p]:
            if os.path.exists(netns):
                subprocess.run(["umount", "-l", netns], capture_output=True)
                try:
                    os.unlink(netns)
                except OSError:
                    pass
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)
        for path in self._cni_cache_files():
            try:
                os.unlink(path)
            except OSError:
                pass
        remove_cgroup_tree(self.cgroup_root)
        daemons.unmount_all_under(self.base)

    def leftovers(self):
        """What stop() should have removed but did not."""
        left = [f"netns {p}" for p in self.pods.values() if p and os.path.exists(p)]
        if subprocess.run(["ip", "link", "show", self.bridge], capture_output=True).returncode == 0:
            left.append(f"link {self.bridge}")
        left += [f"cgroup {d}" for d in _cgroup_dirs_under(self.cgroup_root)]
        left += [f"mount {m}" for m in daemons.mounts_under(self.base)]
        left += [f"CNI cache {p}" for p in self._cni_cache_files()]
        return left

    def network(self):
        return f"arch-cri-{self.session}"

    def _cni_cache_files(self):
        """libcni's cached results for this node's network (<network>-<container>-<if>)."""
        try:
            names = os.listdir(CNI_CACHE)
        except OSError:
            return []
        return [os.path.join(CNI_CACHE, n) for n in names if n.startswith(self.network() + "-")]

    # ---- pods as the kubelet makes them
    def sandbox_config(self, name, namespace, uid=None, attempt=0, labels=None):
        pb = self.pb
        uid = uid or secrets.token_hex(16)
        log_dir = os.path.join(self.logs, f"{namespace}_{name}_{uid}")
        os.makedirs(log_dir, exist_ok=True)
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=namespace,
                                           attempt=attempt),
            hostname=name,
            log_directory=log_dir,
            dns_config=pb.DNSConfig(),
            labels=dict(labels or {}, **{"io.kubernetes.pod.name": name,
                                         "io.kubernetes.pod.namespace": namespace,
                                         "io.kubernetes.pod.uid": uid}),
            annotations={"kubernetes.io/config.source": "api"},
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=f"/{self.cgroup_root}/pod{uid}",
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER,
                                                         ipc=pb.POD),
                    seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined))),
        )

    def run_pod(self, config, handler="arch"):
        pod_id = self.client.run_pod_sandbox(config, handler)
        self.pods[pod_id] = None
        status = self.client.pod_sandbox_status(pod_id, verbose=True)
        self.pods[pod_id] = netns_of(status)
        return pod_id

    def container_config(self, name, image_name, command, envs, sandbox):
        pb = self.pb
        md = sandbox.metadata
        return pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0),
            image=pb.ImageSpec(image=image_name),
            command=list(command[:1]), args=list(command[1:]),
            envs=[pb.KeyValue(key=k, value=v) for k, v in envs.items()],
            labels={"io.kubernetes.container.name": name, "io.kubernetes.pod.name": md.name,
                    "io.kubernetes.pod.namespace": md.namespace,
                    "io.kubernetes.pod.uid": md.uid},
            annotations={"io.kubernetes.container.restartCount": "0",
                         "io.kubernetes.container.terminationMessagePath": "/dev/termination-log"},
            log_path=f"{name}/0.log",
            linux=pb.LinuxContainerConfig(
                resources=pb.LinuxContainerResources(cpu_period=100000, cpu_shares=2,
                                                     oom_score_adj=1000),
                security_context=pb.LinuxContainerSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER,
                                                         ipc=pb.POD),
                    run_as_user=pb.Int64Value(value=0),
                    seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined),
                    masked_paths=["/proc/kcore", "/proc/keys", "/proc/timer_list",
                                  "/sys/firmware"],
                    readonly_paths=["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                    "/proc/sysrq-trigger"])),
        )

    def start_container(self, pod_id, sandbox, name, image_name, command, envs):
        config = self.container_config(name, image_name, command, envs, sandbox)
        cid = self.client.create_container(pod_id, config, sandbox)
        self.client.start_container(cid)
        return cid

    def remove_pod(self, pod_id):
        """What the kubelet does when a pod goes: stop and remove its containers, then
        StopPodSandbox and RemovePodSandbox."""
        for c in self.client.list_containers(pod_id):
            self.client.stop_container(c.id, timeout=0)
            self.client.remove_container(c.id)
        self.client.stop_pod_sandbox(pod_id)
        self.client.remove_pod_sandbox(pod_id)

    # ---- what a container did
    def bundle(self, cid):
        return os.path.join(self.ctd.task_dir(CRI_NAMESPACE), cid)

    def read(self, cid, path):
        """A file's text in the running container (CRI ExecSync cat), None if absent."""
        r = self.client.exec_sync(cid, ["cat", path])
        return r.stdout.decode() if r.exit_code == 0 else None


def netns_of(status):
    """The pod's network namespace path from PodSandboxStatus(verbose) info, or None."""
    try:
        info = json.loads(status.info["info"])
        for ns in info["runtimeSpec"]["linux"]["namespaces"]:
            if ns.get("type") == "network":
                return ns.get("path")
    except (KeyError, ValueError, TypeError):
        pass
    return None
