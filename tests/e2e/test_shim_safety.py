"""arch-runc refuses what would make root run the wrong thing: a runc that leads back to
arch-runc (a copy of it, a symlink, a wrapper script), a node config or runc binary that
another user could have written. Each refusal is a clear error in the caller's runc log,
never a hang and never a line on stdout."""

import json
import os
import shutil
import subprocess

import pytest

from conftest import skip_unless_root


@pytest.fixture
def node(tmp_path, require_arch_runc):
    skip_unless_root()
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    return tmp_path


def write_conf(node, runc, mode=0o644):
    conf = node / "etc" / "arch.conf"
    conf.write_text(f"[runtime]\nrunc = {runc}\n[log]\nlevel = debug\nfile = {node / 'arch.log'}\n")
    conf.chmod(mode)
    return conf


def call(arch_runc, conf, node, *args):
    root = node / "runc-root"
    root.mkdir(mode=0o700, exist_ok=True)
    log = node / "log.json"
    argv = [arch_runc, "--root", str(root), "--log", str(log), "--log-format", "json", *args]
    r = subprocess.run(argv, env=dict(os.environ, ARCH_CONFIG=str(conf)), capture_output=True,
                       text=True, timeout=20, stdin=subprocess.DEVNULL)
    records = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []
    return r, records


def errors(records):
    return [r["msg"] for r in records if r["level"] == "error"]


@pytest.mark.parametrize("kind", ["copy", "symlink", "wrapper"])
def test_a_runc_that_leads_back_to_arch_runc_is_refused(node, require_arch_runc, kind):
    fake = node / "runc"
    if kind == "copy":
        shutil.copy2(require_arch_runc, fake)
    elif kind == "symlink":
        fake.symlink_to(require_arch_runc)
    else:
        fake.write_text(f"#!/bin/sh\nexec {require_arch_runc} \"$@\"\n")
        fake.chmod(0o755)
    conf = write_conf(node, fake)
    r, records = call(require_arch_runc, conf, node, "list")
    assert r.returncode == 1
    assert r.stdout == ""
    msgs = errors(records)
    assert msgs, records
    assert "arch-runc itself" in msgs[-1] or "leads back to arch-runc" in msgs[-1]
    assert "arch-runc" in r.stderr


def test_a_world_writable_config_is_ignored(node, require_arch_runc):
    # The config names a runc that would fail; since the file is not trusted, nothing in it
    # is used: the call passes through to the default runc and succeeds, with an error
    # logged saying why (no policy, so no checkpoint or restore either).
    conf = write_conf(node, "/nonexistent/runc", mode=0o666)
    r, records = call(require_arch_runc, conf, node, "list")
    assert r.returncode == 0, r.stderr
    errors_logged = [x["msg"] for x in records if x["level"] == "error"]
    assert any("writable by group or others" in w and "passing the call through" in w
               for w in errors_logged), records
    assert "ID" in r.stdout  # runc list's header: runc really ran


def test_a_runc_not_owned_by_root_is_refused(node, require_arch_runc):
    fake = node / "runc"
    shutil.copy2("/usr/sbin/runc", fake)
    os.chown(fake, 65534, 65534)
    conf = write_conf(node, fake)
    r, records = call(require_arch_runc, conf, node, "list")
    assert r.returncode == 1
    assert any("not owned by root" in m for m in errors(records)), records


def test_a_missing_runc_is_a_clear_error(node, require_arch_runc):
    conf = write_conf(node, node / "no-such-runc")
    r, records = call(require_arch_runc, conf, node, "state", "c1")
    assert r.returncode == 1
    assert any("no-such-runc" in m and "No such file" in m for m in errors(records)), records
