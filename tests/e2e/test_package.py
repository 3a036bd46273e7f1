"""The Debian package: packaging/build-deb.sh builds it from ARCH_BUILD_DIR, dpkg installs
it on this machine, its binaries checkpoint and restore a container with the CRIU it
bundles, an upgrade keeps a modified conffile, and a purge leaves nothing of it, keeps
checkpoints, follows no symlink and crosses no mount.

The dev set-up owns paths the package uses (/etc/arch, /var/lib/arch, /var/log/arch): they
are set aside (renamed) while these tests run and put back afterwards, so the package meets
a clean node and its purge cannot take the developer's config, node key or logs. A run
killed before putting them back leaves them as <path>.arch-pkgtest-saved; the next run
puts them back first. /opt/arch/criu, the dev CRIU the package copies, must stay as it is.
"""

import contextlib
import hashlib
import io
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import threading
import tomllib

import pytest

from conftest import REPO, CtrEnv, NodeConfig, build_dir
from archtest import checkpoint, daemons, workloads

PACKAGE = "arch"
BUILD_DEB = os.path.join(REPO, "packaging", "build-deb.sh")
CRIU_PREFIX = "/usr/lib/arch/criu"
CRIU = CRIU_PREFIX + "/bin/criu"
DEV_CRIU_PREFIX = os.environ.get("ARCH_CRIU_PREFIX") or "/opt/arch/criu"
BINARIES = ["arch-runc", "arch-runc-helper", "archctl", "archd"]
UNITS = ["archd.service", "arch-gc.service", "arch-gc.timer"]
UNIT_DIR = "/lib/systemd/system"
CONF = "/etc/arch/arch.conf"
STORE = "/var/lib/arch/checkpoints"
KEYS = "/etc/arch/keys"
# ARCH's paths on the node: the package's purge removes them (a non-empty store excepted).
NODE_PATHS = ["/etc/arch", "/var/lib/arch", "/var/log/arch", "/run/arch"]
SAVED = ".arch-pkgtest-saved"
WANTS_LINKS = ["/etc/systemd/system/multi-user.target.wants/archd.service",
               "/etc/systemd/system/timers.target.wants/arch-gc.timer"]


def run(argv, timeout=120, env=None, check=False, text_mode=True):
    r = subprocess.run(argv, capture_output=True, text=text_mode, timeout=timeout, env=env,
                       stdin=subprocess.DEVNULL)
    if check:
        assert r.returncode == 0, f"{argv} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def plain_env(**extra):
    """The environment without ARCH_CONFIG: ARCH's binaries read /etc/arch/arch.conf."""
    env = {k: v for k, v in os.environ.items() if k != "ARCH_CONFIG"}
    env.update(DEBIAN_FRONTEND="noninteractive", **extra)
    return env


def dpkg(*args, check=True):
    return run(["dpkg", *args], env=plain_env(), check=check)


def package_status():
    """dpkg's status of the package ("install ok installed", "deinstall ok config-files"),
    or None when dpkg does not know it."""
    r = run(["dpkg-query", "-W", "-f=${Status}", PACKAGE])
    return r.stdout.strip() if r.returncode == 0 else None


def remove_path(path):
    """Removes a file, symlink (not its target) or tree, never across a mount point."""
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        daemons.unmount_all_under(path)
        shutil.rmtree(path)


def tree_fingerprint(root):
    """Every entry below root: path, type, mode, size, mtime, link target, and bin/criu's hash."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out.append((p, st.st_mode, st.st_size, st.st_mtime_ns,
                        os.readlink(p) if os.path.islink(p) else None))
    with open(os.path.join(root, "bin", "criu"), "rb") as f:
        out.append(hashlib.sha256(f.read()).hexdigest())
    return sorted(out, key=str)


def mode_of(path):
    st = os.lstat(path)
    return st.st_uid, st.st_gid, st.st_mode & 0o7777


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def requirements():
    if os.geteuid() != 0:
        pytest.skip("needs root (dpkg -i on this machine)")
    for tool in ("dpkg-deb", "dpkg-shlibdeps", "patchelf"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is missing (dpkg-dev, patchelf)")
    for name in BINARIES:
        sub = {"archctl": "cli", "archd": "agent"}.get(name, "shim")
        if not os.access(os.path.join(build_dir(), "src", sub, name), os.X_OK):
            pytest.skip(f"{name} is not built in {build_dir()}")
    if not os.access(os.path.join(DEV_CRIU_PREFIX, "bin", "criu"), os.X_OK):
        pytest.skip(f"no private CRIU at {DEV_CRIU_PREFIX} to bundle (scripts/install-criu.sh)")
    status = package_status()
    if status and "not-installed" not in status:
        pytest.skip(f"the {PACKAGE} package is already on this machine ({status}): not touching it")


def build_deb(out):
    r = run([BUILD_DEB, build_dir(), out], timeout=300, env=plain_env(ARCH_DEB_LINTIAN="0"))
    assert r.returncode == 0, f"build-deb.sh failed:\n{r.stderr}"
    deb = r.stdout.strip()
    assert os.path.basename(deb).startswith(f"{PACKAGE}_") and deb.endswith("_amd64.deb"), deb
    return deb


@pytest.fixture(scope="module")
def deb(requirements, tmp_path_factory):
    return build_deb(str(tmp_path_factory.mktemp("deb")))


def deb_version(path):
    return run(["dpkg-deb", "-f", path, "Version"], check=True).stdout.strip()


@pytest.fixture(scope="module")
def node_set_aside(requirements):
    """ARCH's node paths set aside (renamed) for the module, put back at its end."""
    for path in NODE_PATHS:  # a killed earlier run: put its saved paths back first
        if os.path.lexists(path + SAVED) and not os.path.lexists(path):
            os.rename(path + SAVED, path)
        elif os.path.lexists(path + SAVED):
            pytest.skip(f"{path} and {path + SAVED} both exist: sort them out by hand")
        if daemons.mounts_under(path):
            pytest.skip(f"{path} is or holds a mount point: not setting it aside")
    moved, owned = [], []  # owned: the paths the tests may write and remove
    try:
        for path in NODE_PATHS:
            if os.path.lexists(path):
                os.rename(path, path + SAVED)
                moved.append(path)
            owned.append(path)
        yield
    finally:
        if package_status():
            dpkg("--purge", PACKAGE, check=False)
        for path in owned:
            remove_path(path)
        for path in moved:
            os.rename(path + SAVED, path)


@pytest.fixture
def clean_node(node_set_aside):
    """Per test: none of ARCH's node paths, and whatever the test left of them removed."""
    assert not [p for p in NODE_PATHS if os.path.lexists(p)]
    try:
        yield
    finally:
        if package_status():
            dpkg("--purge", PACKAGE, check=False)
        for path in NODE_PATHS:
            remove_path(path)


def deb_paths(deb_path):
    """The paths the package holds, from its archive (as `dpkg -L` lists them once installed)."""
    out = run(["dpkg-deb", "--fsys-tarfile", deb_path], check=True, text_mode=False).stdout
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        names = {"/" + m.name.removeprefix("./").rstrip("/") for m in tar.getmembers()}
    return sorted(names - {"/", "/."})


@contextlib.contextmanager
def installed(deb_path):
    """The package installed (dpkg -i); purged on the way out, whatever happened."""
    try:
        r = dpkg("-i", deb_path, check=False)
        assert r.returncode == 0, f"dpkg -i failed:\n{r.stdout}\n{r.stderr}"
        yield r
    finally:
        if package_status():
            dpkg("--purge", PACKAGE, check=False)


def assert_nothing_left(listed, existed_before):
    """After the purge: none of the package's paths but those that were there before it
    (/usr/bin, /etc ...), none of ARCH's node paths, no unit and no enablement link."""
    left = [p for p in listed if os.path.lexists(p) and p not in existed_before]
    assert not left, f"left after the purge: {left}"
    left = [p for p in NODE_PATHS + WANTS_LINKS + [os.path.join(UNIT_DIR, u) for u in UNITS]
            if os.path.lexists(p)]
    assert not left, f"left after the purge: {left}"
    assert package_status() is None, f"dpkg still knows the package: {package_status()}"


class ExeWatch:
    """Records, while running, which CRIU binaries processes run (/proc/*/exe)."""

    def __init__(self, prefixes):
        self.prefixes = prefixes
        self.seen = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        exe = os.readlink(f"/proc/{entry}/exe")
                    except OSError:
                        continue
                    if exe.startswith(self.prefixes):
                        self.seen.add(exe)
            self._stop.wait(0.002)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------ checks of the installed package

def check_depends(deb_path):
    """Every library a binary links directly comes from a package the deb Depends on (the
    owner of the file the loader finds, as dpkg -S names it), and runc and iproute2 too."""
    fields = run(["dpkg-deb", "-f", deb_path, "Depends"], check=True).stdout
    depends = {d.strip().split()[0] for d in fields.split(",")}
    assert {"runc", "iproute2"} <= depends, depends
    cache = {}
    for line in run(["ldconfig", "-p"], check=True).stdout.splitlines()[1:]:
        soname, _, path = line.strip().partition(" => ")
        if "x86-64" in soname:
            cache.setdefault(soname.split()[0], path)
    for name in BINARIES:
        needed = run(["patchelf", "--print-needed", f"/usr/bin/{name}"])
        if needed.returncode != 0:  # not dynamic: only arch-runc may be static
            assert name == "arch-runc", needed.stderr
            continue
        for soname in needed.stdout.split():
            path = os.path.realpath(cache[soname])
            owner = run(["dpkg", "-S", path]).stdout or run(
                ["dpkg", "-S", path.replace("/usr/lib/", "/lib/", 1)], check=True).stdout
            pkg = owner.split(":")[0]
            assert pkg in depends, f"{name} needs {soname} ({pkg}), not in Depends: {fields}"


def check_files_and_modes():
    for name in BINARIES:
        assert mode_of(f"/usr/bin/{name}") == (0, 0, 0o755), name
    assert mode_of(CONF) == (0, 0, 0o644)
    assert mode_of("/etc/arch") == (0, 0, 0o755)
    for d in ("/var/lib/arch", STORE, "/var/lib/arch/agent", "/var/log/arch", KEYS):
        assert mode_of(d) == (0, 0, 0o700), d
    keys = [k for k in os.listdir(KEYS) if k.endswith(".key")]
    assert len(keys) == 1, f"postinst made no node key (or more than one): {os.listdir(KEYS)}"
    assert mode_of(os.path.join(KEYS, keys[0]))[2] == 0o600
    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", PACKAGE], check=True).stdout
    assert {line.split()[0] for line in conffiles.splitlines() if line.strip()} == {
        CONF, "/etc/logrotate.d/arch"}
    for unit in UNITS:
        assert mode_of(os.path.join(UNIT_DIR, unit)) == (0, 0, 0o644), unit
    # dpkg's own check of what it installed (md5sums).
    verify = run(["dpkg", "--verify", PACKAGE])
    assert verify.returncode == 0 and not verify.stdout.strip(), verify.stdout + verify.stderr


def check_bundled_criu():
    interp = run(["patchelf", "--print-interpreter", CRIU], check=True).stdout.strip()
    assert interp.startswith(CRIU_PREFIX + "/"), interp
    rpath = run(["patchelf", "--print-rpath", CRIU], check=True).stdout.strip()
    assert rpath and all(p.startswith(CRIU_PREFIX + "/") for p in rpath.split(":")), rpath
    # Every library it loads comes from the package's prefix, none from /opt or the host.
    r = run([CRIU, "check"], env=plain_env(LD_DEBUG="libs"))
    assert "Looks good" in r.stdout + r.stderr, r.stdout + r.stderr[-2000:]
    loaded = {line.split("calling init: ")[1].strip() for line in r.stderr.splitlines()
              if "calling init: " in line}
    assert loaded and all(p.startswith(CRIU_PREFIX + "/") for p in loaded), loaded


def config_keys(text):
    return [line.split("=")[0].strip() for line in text.splitlines()
            if "=" in line and not line.startswith("#")]


def check_config(tmp_path):
    text = open(CONF).read()
    assert f"\ncriu = {CRIU}\n" in text
    r = run(["/usr/bin/archctl", "config", "check"], env=plain_env(), check=True)
    assert f"{CONF}: ok" in r.stdout
    # The keys are exactly those of `archctl config init`: every known key, no invented one.
    fresh = tmp_path / "init" / "arch.conf"
    run(["/usr/bin/archctl", "config", "init", "--path", str(fresh)], env=plain_env(), check=True)
    assert config_keys(text) == config_keys(fresh.read_text())
    v = run(["/usr/bin/archctl", "version"], env=plain_env(), check=True).stdout
    assert f"config:  {CONF}\n" in v, v
    assert f"criu:    {CRIU} (version 4." in v, v


def check_units():
    units = [os.path.join(UNIT_DIR, u) for u in UNITS]
    if shutil.which("systemd-analyze"):
        r = run(["systemd-analyze", "verify", *units])
        assert r.returncode == 0, r.stdout + r.stderr
    archd = open(units[0]).read()
    assert "\nExecStart=/usr/bin/archd --foreground\n" in archd
    gc = open(units[1]).read()
    assert "\nExecStart=/usr/bin/archctl checkpoint gc --older-than ${ARCH_GC_OLDER_THAN}\n" in gc
    assert "\nEnvironment=ARCH_GC_OLDER_THAN=7d\n" in gc
    assert "\nOnCalendar=daily\n" in open(units[2]).read()
    # What the timer runs, as systemd would run it (the flags archctl takes today).
    r = run(["/usr/bin/archctl", "checkpoint", "gc", "--older-than", "7d"], env=plain_env())
    assert r.returncode == 0, r.stdout + r.stderr
    # Nothing enabled: PID 1 is not systemd here (postinst enables only where it is).
    if not os.path.isdir("/run/systemd/system"):
        assert not [p for p in WANTS_LINKS if os.path.lexists(p)]


def check_logrotate(tmp_path):
    """A forced rotation with the packaged rules: arch.log renamed, events.jsonl copied and
    truncated (archd keeps it open)."""
    if not shutil.which("logrotate"):
        return
    for name in ("arch.log", "events.jsonl"):
        with open(f"/var/log/arch/{name}", "a") as f:
            f.write('{"msg": "before the rotation"}\n')
    ino = os.stat("/var/log/arch/events.jsonl").st_ino
    r = run(["logrotate", "-f", "-s", str(tmp_path / "logrotate.state"), "/etc/logrotate.d/arch"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "before the rotation" in open("/var/log/arch/events.jsonl.1").read()
    assert os.stat("/var/log/arch/events.jsonl").st_ino == ino
    assert os.path.getsize("/var/log/arch/events.jsonl") == 0
    assert "before the rotation" in open("/var/log/arch/arch.log.1").read()


def install_into_containerd(ctd, tmp_path):
    """`archctl install containerd` on the private containerd's config file; returns the
    runtime binary containerd then reads for "arch" (`containerd config dump` of the file,
    with the CRI plugin, which the test containerd disables, left enabled to show it)."""
    r = run(["/usr/bin/archctl", "install", "containerd", "--config", ctd.config,
             "--arch-runc", "/usr/bin/arch-runc"], env=plain_env(), check=True)
    assert 'ARCH runtime "arch" added' in r.stdout, r.stdout
    with open(ctd.config) as f:
        text = f.read()
    assert "/usr/bin/arch-runc" in text
    shown = tmp_path / "containerd-with-cri.toml"
    shown.write_text(re.sub(r"^disabled_plugins\s*=.*$", "", text, flags=re.M))
    dump = run([daemons.CONTAINERD, "--config", str(shown), "config", "dump"], check=True).stdout
    cri = tomllib.loads(dump)["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]
    return cri["runtimes"]["arch"]["options"]["BinaryName"]


def checkpoint_and_restore(ctd, workload_image, arch_runc):
    """A counter checkpointed with /usr/bin/archctl and restored by /usr/bin/arch-runc, both
    reading /etc/arch/arch.conf (containerd runs without ARCH_CONFIG)."""
    ns = f"arch-pkg-{secrets.token_hex(3)}"
    runc_root = os.path.join(ctd.base, "runc-root")
    os.makedirs(runc_root, mode=0o700)
    ctd.ctr("images", "import", workload_image.oci, ns=ns, check=True, timeout=120)
    env = CtrEnv(ctd, ns, workload_image.name, runc_root, ctd.base)
    node = NodeConfig(CONF, "/var/log/arch/arch.log", daemons.RUNC, CRIU, STORE, "/run/arch", KEYS)
    c = checkpoint.CtrContainers(env, workload_image.name, arch_runc,
                                 checkpoint.Archctl("/usr/bin/archctl", CONF), node)
    cid = checkpoint.new_id("pkg")
    path = "/data/count.txt"
    try:
        c.run(cid, workloads.counter(path))
        c.wait_lines(cid, path, 10, workloads.parse_counter)
        with ExeWatch((CRIU_PREFIX + "/", DEV_CRIU_PREFIX + "/")) as watch:
            out = c.checkpoint(cid)
        assert out["checkpoint"].startswith(STORE + "/"), out
        assert CRIU in watch.seen, f"the dump did not run the bundled CRIU: {watch.seen}"
        assert c.delete(cid) == 137
        c.run(cid, workloads.counter(path))
        c.assert_restored(cid, out["checkpoint"])
        uuid0, values0 = workloads.parse_counter(
            checkpoint.diff_member(out["checkpoint"], path).decode())
        uuid, values = c.wait_lines(cid, path, len(values0) + 5, workloads.parse_counter)
        assert uuid == uuid0, "the counter started again instead of resuming"
        workloads.check_sequence(values, "the counter after the restore")
    finally:
        left = c.cleanup()  # also removes the container's key from the store
        daemons.remove_cgroup_parent(ns)
    assert not left, f"processes left in the container's cgroup: {left}"


# ------------------------------------------------------------------ tests

def test_install_use_and_purge_leave_nothing(deb, clean_node, workload_image, tmp_path):
    dev_criu = tree_fingerprint(DEV_CRIU_PREFIX)
    assert deb_version(deb) == run([os.path.join(build_dir(), "src", "cli", "archctl"),
                                    "version"], env=plain_env()).stdout.split()[2]
    paths = deb_paths(deb)
    existed = {p for p in paths if os.path.lexists(p)}
    assert CRIU in paths and "/usr/bin/archd" in paths and CONF in paths
    assert not [p for p in existed if not os.path.isdir(p)], "package files exist before it"
    with installed(deb):
        listed = [p for p in run(["dpkg", "-L", PACKAGE], check=True).stdout.splitlines()
                  if p and p != "/."]
        # dpkg may be told not to install docs (path-exclude, as in minimal images).
        assert set(listed) <= set(paths) and all(
            p.startswith("/usr/share/doc/") for p in set(paths) - set(listed)), listed
        check_files_and_modes()
        check_depends(deb)
        check_bundled_criu()
        check_config(tmp_path)
        check_units()
        check_logrotate(tmp_path)

        ctd = daemons.Containerd(str(tmp_path / "containerd"), env={"ARCH_CONFIG": ""})
        try:
            ctd.start()
            arch_runc = install_into_containerd(ctd, tmp_path)
            assert arch_runc == "/usr/bin/arch-runc"
            checkpoint_and_restore(ctd, workload_image, arch_runc)
        finally:
            ctd.stop()
            daemons.unmount_all_under(str(tmp_path))
        # The checkpoint's key is gone; the store holds only empty directories now.
        r = dpkg("--purge", PACKAGE)
        assert "holds checkpoints" not in r.stderr, r.stderr
    assert_nothing_left(listed, existed)
    assert os.path.isdir("/usr/bin") and os.path.isdir(UNIT_DIR)
    assert tree_fingerprint(DEV_CRIU_PREFIX) == dev_criu, f"{DEV_CRIU_PREFIX} was changed"


@pytest.fixture(scope="module")
def deb_next(deb, tmp_path_factory):
    """The same package as a newer version (its control file's Version bumped): the upgrade
    path, without a second build."""
    out = tmp_path_factory.mktemp("deb-next")
    tree = out / "tree"
    run(["dpkg-deb", "-R", deb, str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    version = deb_version(deb)
    control.write_text(control.read_text().replace(f"\nVersion: {version}\n",
                                                   f"\nVersion: {version}+pkgtest1\n"))
    path = str(out / f"{PACKAGE}_{version}+pkgtest1_amd64.deb")
    run(["dpkg-deb", "--root-owner-group", "-Zzstd", "-b", str(tree), path], check=True)
    assert deb_version(path) == version + "+pkgtest1"
    return path


def test_upgrade_keeps_a_modified_conffile_and_the_key(deb, deb_next, clean_node):
    with installed(deb):
        r = run(["/usr/bin/archctl", "log", "--level", "debug"], env=plain_env(), check=True)
        modified = open(CONF).read()
        assert "\nlevel = debug\n" in modified, r.stdout
        key_files = sorted(os.listdir(KEYS))
        r = dpkg("-i", deb_next, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert deb_version(deb_next) in run(["dpkg-query", "-W", PACKAGE], check=True).stdout
        assert open(CONF).read() == modified, "the upgrade replaced the modified conffile"
        assert not [n for n in os.listdir("/etc/arch") if ".dpkg-" in n], os.listdir("/etc/arch")
        assert sorted(os.listdir(KEYS)) == key_files, "the upgrade changed the node key"
        run(["/usr/bin/archctl", "config", "check"], env=plain_env(), check=True)
        # Back to the older version (a downgrade is an upgrade too for dpkg): still kept.
        r = dpkg("-i", deb, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert open(CONF).read() == modified
    assert not os.path.lexists("/etc/arch")


def test_purge_follows_no_symlink_and_crosses_no_mount(deb, clean_node, tmp_path):
    outside = tmp_path / "outside"
    victims = {}
    for name in ("dir", "logdir", "mounted"):
        (outside / name).mkdir(parents=True)
        victims[name] = outside / name / "precious"
        victims[name].write_text(name)
    victims["file"] = outside / "file"
    victims["file"].write_text("file")
    mnt = "/var/lib/arch/agent/mnt"
    try:
        with installed(deb):
            os.symlink(outside / "dir", "/var/lib/arch/agent/evil-dir")
            os.symlink(victims["file"], "/var/lib/arch/agent/evil-file")
            os.symlink(outside / "dir", "/etc/arch/evil-dir")
            os.makedirs("/run/arch", mode=0o700, exist_ok=True)
            os.symlink(outside / "dir", "/run/arch/evil-dir")
            shutil.rmtree("/var/log/arch")
            os.symlink(outside / "logdir", "/var/log/arch")  # the whole directory a link
            os.mkdir(mnt)
            run(["mount", "--bind", str(outside / "mounted"), mnt], check=True)
            r = dpkg("--purge", PACKAGE)
            assert "/var/log/arch is a symlink" in r.stderr, r.stderr
            for name, path in victims.items():
                assert path.read_text() == name, f"the purge reached {path}"
            assert os.path.islink("/var/log/arch")  # left, not followed
            assert daemons.mounts_under(mnt) == [mnt]  # (os.path.ismount misses a same-fs bind)
            assert os.path.exists(os.path.join(mnt, "precious"))
            # Everything else of ARCH's is gone.
            assert not os.path.lexists("/etc/arch") and not os.path.lexists("/run/arch")
            # agent/ holds a mount: left whole (a bind mount of the same file system has the
            # same st_dev, so rm --one-file-system alone would have emptied it).
            assert "/var/lib/arch/agent has a mount point" in r.stderr, r.stderr
            assert os.listdir("/var/lib/arch") == ["agent"], os.listdir("/var/lib/arch")
            assert sorted(os.listdir("/var/lib/arch/agent")) == ["evil-dir", "evil-file", "mnt"]
    finally:
        daemons.unmount_all_under("/var/lib/arch")


def test_purge_keeps_checkpoints_and_their_keys(deb, clean_node):
    """A node with a store from before the package: installing keeps its checkpoints and
    takes group/other write access from the world-writable store; purging keeps them with
    the node keys that seal them, and removes the rest."""
    kept = os.path.join(STORE, "default", "job-1", "ckpt-1", "manifest.json")
    os.makedirs(os.path.dirname(kept), mode=0o700)
    with open(kept, "w") as f:
        f.write("{}\n")
    os.chmod(STORE, 0o777)
    with installed(deb):
        assert mode_of(STORE) == (0, 0, 0o755)
        assert open(kept).read() == "{}\n"
        os.makedirs(os.path.join(STORE, "empty", "dirs"), mode=0o700)
        key_files = sorted(os.listdir(KEYS))
        r = dpkg("--purge", PACKAGE)
        assert "holds checkpoints: kept" in r.stderr, r.stderr
    assert open(kept).read() == "{}\n"
    assert sorted(os.listdir(KEYS)) == key_files, "the keys that seal the checkpoints went"
    assert os.listdir("/etc/arch") == ["keys"]
    assert os.listdir("/var/lib/arch") == ["checkpoints"]
    assert not os.path.lexists("/var/log/arch") and package_status() is None


def test_maintainer_scripts_drive_systemd_only_where_it_runs(deb, clean_node, tmp_path):
    """With systemd as PID 1 (faked in a private mount namespace: /run/systemd/system and a
    systemctl that records its arguments and fails), the scripts reload, enable and stop
    what they should, and a failing systemctl fails none of them; without it, none calls
    systemctl at all."""
    calls = tmp_path / "systemctl.calls"
    fake = tmp_path / "bin" / "systemctl"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexit 1\n')
    fake.chmod(0o755)
    info = "/var/lib/dpkg/info/arch"
    steps = [("postinst", "configure", ""), ("prerm", "upgrade", "0.1.0"),
             ("postinst", "configure", "0.1.0"), ("prerm", "remove", ""),
             ("postrm", "remove", "")]
    script = " && ".join(f'echo "== {s} {a} {v}" >> {calls} && {info}.{s} {a} "{v}"'
                         for s, a, v in steps)
    env = plain_env(PATH=f"{fake.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    with installed(deb):
        if not os.path.isdir("/run/systemd/system"):
            r = run(["sh", "-c", script], env=env)  # no systemd here: not one call
            assert r.returncode == 0, r.stderr
            assert not [l for l in calls.read_text().splitlines() if not l.startswith("==")]
            calls.unlink()
        r = run(["unshare", "-m", "sh", "-c",
                 f"mount -t tmpfs arch-pkgtest /run && mkdir -p /run/systemd/system && {script}"],
                env=env)
        assert r.returncode == 0, r.stderr
    assert calls.read_text().splitlines() == [
        "== postinst configure ", "daemon-reload", "enable --now arch-gc.timer",
        "enable archd.service",
        "== prerm upgrade 0.1.0",
        "== postinst configure 0.1.0", "daemon-reload", "enable --now arch-gc.timer",
        "try-restart archd.service",
        "== prerm remove ", "stop arch-gc.timer arch-gc.service archd.service",
        "disable arch-gc.timer archd.service",
        "== postrm remove ", "daemon-reload"]
