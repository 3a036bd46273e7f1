"""archctl against the real things: containerd reading the config it wrote, arch-runc
obeying the log settings it set, and every edit undone by --uninstall."""

import json
import os
import shutil
import subprocess

import pytest

from conftest import skip_unless_root
from archtest import daemons

CONTAINERD_CONFIG = """version = 2
root = "/var/lib/containerd-test-only"
# a comment the backup keeps
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true
"""


@pytest.fixture
def archctl(archctl_bin):
    return archctl_bin


def run(argv, env=None):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    return r


def containerd_cri_runtimes(config):
    """The CRI runtimes as containerd itself reads them (`containerd config dump`)."""
    r = run([daemons.CONTAINERD, "--config", config, "config", "dump"])
    assert r.returncode == 0, r.stderr
    import tomllib
    dump = tomllib.loads(r.stdout)
    return dump["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]


def test_install_containerd_is_read_by_containerd_and_reversible(archctl, tmp_path):
    if not os.access(daemons.CONTAINERD, os.X_OK):
        pytest.skip("containerd is not installed")
    config = tmp_path / "config.toml"
    config.write_text(CONTAINERD_CONFIG)
    before = containerd_cri_runtimes(str(config))
    assert "arch" not in before

    r = run([archctl, "install", "containerd", "--default", "--config", str(config),
             "--arch-runc", "/usr/local/bin/arch-runc"])
    assert r.returncode == 0, r.stderr
    backups = [p for p in os.listdir(tmp_path) if p.startswith("config.toml.arch-backup.")]
    assert len(backups) == 1
    assert (tmp_path / backups[0]).read_text() == CONTAINERD_CONFIG

    after = containerd_cri_runtimes(str(config))
    assert after["arch"]["runtime_type"] == "io.containerd.runc.v2"
    assert after["arch"]["options"]["BinaryName"] == "/usr/local/bin/arch-runc"
    assert after["arch"]["options"]["SystemdCgroup"] is True
    assert after["runc"]["options"]["BinaryName"] == "/usr/local/bin/arch-runc"

    again = run([archctl, "install", "containerd", "--default", "--config", str(config)])
    assert again.returncode == 0 and "already" in again.stdout

    r = run([archctl, "install", "containerd", "--uninstall", "--config", str(config)])
    assert r.returncode == 0, r.stderr
    assert containerd_cri_runtimes(str(config)) == before


def test_install_defaults_to_the_arch_runc_beside_archctl(archctl, tmp_path):
    """Installed together (the Debian package's /usr/bin), archctl names its own arch-runc;
    a relative --arch-runc is refused."""
    if not os.access(daemons.CONTAINERD, os.X_OK):
        pytest.skip("containerd is not installed")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shutil.copy2(archctl, bindir / "archctl")
    (bindir / "arch-runc").write_text("#!/bin/sh\n")
    (bindir / "arch-runc").chmod(0o755)
    config = tmp_path / "config.toml"
    config.write_text(CONTAINERD_CONFIG)
    r = run([str(bindir / "archctl"), "install", "containerd", "--config", str(config)])
    assert r.returncode == 0, r.stderr
    assert containerd_cri_runtimes(str(config))["arch"]["options"]["BinaryName"] == \
        str(bindir / "arch-runc")
    r = run([str(bindir / "archctl"), "install", "containerd", "--uninstall", "--config",
             str(config)])
    assert r.returncode == 0 and "arch" not in containerd_cri_runtimes(str(config)), r.stderr
    r = run([archctl, "install", "containerd", "--config", str(config), "--arch-runc", "arch-runc"])
    assert r.returncode == 2 and "absolute" in r.stderr, r.stderr


def test_install_refuses_a_malformed_file_and_leaves_it(archctl, tmp_path):
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text('{"debug": true,')
    r = run([archctl, "install", "docker", "--config", str(daemon_json)])
    assert r.returncode != 0
    assert "not valid JSON" in r.stderr
    assert daemon_json.read_text() == '{"debug": true,'
    assert os.listdir(tmp_path) == ["daemon.json"]


def test_install_docker_edits_only_its_keys(archctl, docker_env, tmp_path, require_arch_runc):
    """daemon.json gains the arch runtime (and default), keeps every other key, and is restored."""
    base = docker_env.dockerd.config
    with open(base) as f:
        original = json.load(f)
    config = tmp_path / "daemon.json"
    config.write_text(json.dumps({k: v for k, v in original.items() if k != "runtimes"}))
    r = run([archctl, "install", "docker", "--default", "--config", str(config),
             "--arch-runc", require_arch_runc])
    assert r.returncode == 0, r.stderr
    written = json.loads(config.read_text())
    assert written["runtimes"]["arch"]["path"] == require_arch_runc
    assert written["default-runtime"] == "arch"
    for key, value in original.items():
        if key != "runtimes":
            assert written[key] == value

    r = run([archctl, "install", "docker", "--uninstall", "--config", str(config)])
    assert r.returncode == 0, r.stderr
    assert json.loads(config.read_text()) == {k: v for k, v in original.items() if k != "runtimes"}


def test_log_settings_reach_arch_runc(archctl, require_arch_runc, tmp_path):
    skip_unless_root()
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755)
    conf = etc / "arch.conf"
    conf.write_text("# keep me\n[runtime]\nrunc = /usr/sbin/runc\n")
    conf.chmod(0o644)
    log_file = tmp_path / "arch-runc.log"
    env = dict(os.environ, ARCH_CONFIG=str(conf))

    r = run([archctl, "log", "--level", "debug", "--file", str(log_file)], env=env)
    assert r.returncode == 0, r.stderr
    assert conf.read_text().startswith("# keep me\n[runtime]\nrunc = /usr/sbin/runc\n")
    shown = run([archctl, "log"], env=env)
    assert "level: debug" in shown.stdout and str(log_file) in shown.stdout

    root = tmp_path / "runc-root"
    root.mkdir(mode=0o700)
    r = run([require_arch_runc, "--root", str(root), "list"], env=env)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in log_file.read_text().splitlines()]
    assert any(l["level"] == "debug" and "arch-runc: list" in l["msg"] for l in lines), lines

    r = run([archctl, "log", "--level", "error"], env=env)
    assert r.returncode == 0
    size = log_file.stat().st_size
    run([require_arch_runc, "--root", str(root), "list"], env=env)
    assert log_file.stat().st_size == size  # debug lines no longer written

    bad = run([archctl, "log", "--level", "shouting"], env=env)
    assert bad.returncode != 0 and "unknown log level" in bad.stderr
    assert "level = error" in conf.read_text()


def test_version(archctl):
    r = run([archctl, "version"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("archctl version ")
    assert "runc:" in r.stdout


def test_exit_codes_follow_the_documented_table(archctl, tmp_path):
    """src/cli/exit_codes.h: the argument parser's own codes (105, 106, 109...) never leak."""
    help_text = run([archctl, "--help"])
    assert help_text.returncode == 0
    assert "Exit codes:" in help_text.stdout and "7  partial failure" in help_text.stdout
    for argv, words in [([], "subcommand"), (["version", "--bogus"], "--bogus"),
                        (["frobnicate"], "not a command"), (["container", "list", "-o", "yaml"], "yaml"),
                        (["checkpoint", "gc"], "--older-than"), (["job", "kill"], "id")]:
        r = run([archctl, *argv])
        assert r.returncode == 2, (argv, r.returncode, r.stderr)
        assert words in r.stderr, (argv, r.stderr)
    # Errors archctl finds itself: invalid input 2, conflict 4.
    r = run([archctl, "config", "init", "--path", "relative.conf"])
    assert r.returncode == 2 and "must be absolute" in r.stderr, r.stderr
    existing = tmp_path / "arch.conf"
    existing.write_text("[log]\n")
    r = run([archctl, "config", "init", "--path", str(existing)])
    assert r.returncode == 4 and "not replacing it" in r.stderr, r.stderr
    assert existing.read_text() == "[log]\n"
    r = run([archctl, "checkpoint", "gc", "--older-than", "soon", "--store", str(tmp_path)])
    assert r.returncode == 2 and "invalid duration" in r.stderr, r.stderr
