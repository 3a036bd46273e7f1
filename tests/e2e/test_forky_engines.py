"""containerd 2.x (Debian forky, scripts/install-test-engines.sh) reads what `archctl install
containerd` writes: the version 3 layout (plugins."io.containerd.cri.v1.runtime"), in a file
containerd 2.1 wrote itself (`containerd config default`) and in a new one, where archctl
picks version 3 from the containerd on PATH. The pass-through, checkpoint/restore and CRI
runs against these engines are ctest's e2e.forky.* entries (tests/CMakeLists.txt).
"""

import os
import subprocess
import tomllib

import pytest

from archtest import daemons

FORKY_BIN = os.path.join(daemons.FORKY_PREFIX, "bin")
CONTAINERD2 = os.path.join(FORKY_BIN, "containerd")
CRI_RUNTIME = "io.containerd.cri.v1.runtime"


@pytest.fixture
def containerd2():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not os.access(CONTAINERD2, os.X_OK):
        pytest.skip(f"{CONTAINERD2} missing (scripts/install-test-engines.sh installs it)")
    return CONTAINERD2


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)


def cri_runtimes(containerd, config):
    """The CRI runtimes as containerd 2.x itself reads them (`containerd config dump`)."""
    r = run([containerd, "--config", config, "config", "dump"])
    assert r.returncode == 0, r.stderr
    dump = tomllib.loads(r.stdout)
    assert dump["version"] == 3, dump["version"]
    return dump["plugins"][CRI_RUNTIME]["containerd"]["runtimes"]


def test_install_edits_containerd_2_default_config(containerd2, archctl_bin, tmp_path):
    default = run([containerd2, "config", "default"])
    assert default.returncode == 0, default.stderr
    assert default.stdout.startswith("version = 3"), default.stdout[:200]
    config = tmp_path / "config.toml"
    config.write_text(default.stdout)
    before = cri_runtimes(containerd2, str(config))
    assert "arch" not in before and "runc" in before

    r = run([archctl_bin, "install", "containerd", "--default", "--config", str(config),
             "--arch-runc", "/usr/local/bin/arch-runc"])
    assert r.returncode == 0, r.stderr
    after = cri_runtimes(containerd2, str(config))
    assert after["arch"]["runtime_type"] == "io.containerd.runc.v2"
    assert after["arch"]["options"]["BinaryName"] == "/usr/local/bin/arch-runc"
    assert after["runc"]["options"]["BinaryName"] == "/usr/local/bin/arch-runc"
    # runc's other options (the cgroup driver ...) are the arch runtime's too.
    for key, value in before["runc"]["options"].items():
        if key != "BinaryName":
            assert after["arch"]["options"].get(key) == value, key

    r = run([archctl_bin, "install", "containerd", "--uninstall", "--config", str(config),
             "--arch-runc", "/usr/local/bin/arch-runc"])
    assert r.returncode == 0, r.stderr
    assert cri_runtimes(containerd2, str(config)) == before


def test_new_config_gets_version_3_from_the_containerd_on_path(containerd2, archctl_bin,
                                                               tmp_path):
    config = tmp_path / "new" / "config.toml"
    env = dict(os.environ, PATH=f"{FORKY_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    r = run([archctl_bin, "install", "containerd", "--config", str(config),
             "--arch-runc", "/usr/local/bin/arch-runc"], env=env)
    assert r.returncode == 0, r.stderr
    assert config.read_text().find("version = 3") >= 0, config.read_text()
    assert cri_runtimes(containerd2, str(config))["arch"]["options"]["BinaryName"] == \
        "/usr/local/bin/arch-runc"
    # With Debian 12's containerd 1.6 on PATH instead, a new file is version 2.
    old = tmp_path / "old" / "config.toml"
    r = run([archctl_bin, "install", "containerd", "--config", str(old),
             "--arch-runc", "/usr/local/bin/arch-runc"],
            env=dict(os.environ, PATH="/usr/sbin:/usr/bin:/sbin:/bin"))
    assert r.returncode == 0, r.stderr
    if os.access("/usr/bin/containerd", os.X_OK):
        assert "version = 2" in old.read_text(), old.read_text()
