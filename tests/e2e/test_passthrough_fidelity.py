"""Pass-through fidelity (issue 17): what a runtime test suite sees differ from runc.

- The registry record arch-runc writes before runc runs does not outlive a container runc
  never kept: a foreground `run` (runc deletes the container when it ends) and a create
  that runc refuses leave no record (`archctl container list` shows none as "gone"); a
  container runc keeps stays recorded until its delete.
- The loop marker (_ARCH_RUNC_HOP) reaches neither OCI hooks without their own `env` nor
  the container: a hook that calls the runtime again works as under runc. A configured
  runc that leads back to arch-runc is still refused.
(`arch-runc --version` printing runc's text unchanged: test_passthrough_cli.py::test_version.)
"""

import json
import os
import secrets
import subprocess

import pytest

from archtest import daemons, proc
from test_passthrough_cli import RUNC, bundle, call, runc_root  # noqa: F401  (fixtures)


@pytest.fixture
def arch(require_arch_runc):
    return require_arch_runc


@pytest.fixture
def env(node_config):
    return dict(os.environ, ARCH_CONFIG=node_config.path)


def set_spec(bundle, args, enable=True, **top):
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    if enable:
        spec["process"]["env"].append("ARCH_ENABLE=1")
    spec.update(top)
    (bundle / "config.json").write_text(json.dumps(spec))


def records(archctl, cid):
    return [x for x in archctl.json("container", "list") if x["id"] == cid]


def wait_no_record(archctl, cid, what):
    try:
        proc.wait_until(lambda: not records(archctl, cid), 10, f"{what}: no record of {cid}")
    except proc.WaitTimeout:
        raise AssertionError(f"{what} left a registry record: {records(archctl, cid)}")


def test_foreground_run_leaves_no_record(arch, env, runc_root, bundle, archctl_cli):
    set_spec(bundle, ["sh", "-c", "while [ ! -e /tmp/go ]; do usleep 20000; done; exit 3"])
    cid = f"e2e-fg-{secrets.token_hex(3)}"
    with open(os.devnull, "w") as null:
        p = subprocess.Popen([arch, "--root", runc_root, "run", "--bundle", str(bundle), cid],
                             env=env, stdin=subprocess.DEVNULL, stdout=null, stderr=null)
    try:
        # While it runs, ARCH manages it (a record, status running) ...
        proc.wait_until(lambda: [r for r in records(archctl_cli, cid)
                                 if r["status"] == "running"], 20, f"{cid} to run")
        (bundle / "rootfs" / "tmp" / "go").write_text("")
        assert p.wait(timeout=30) == 3
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        call(RUNC, ["--root", runc_root, "delete", "--force", cid], env)
    # ... and runc deleted the container when it ended: the record goes too.
    wait_no_record(archctl_cli, cid, "a foreground run")


def test_refused_create_or_run_leaves_no_record(arch, env, runc_root, bundle, archctl_cli):
    set_spec(bundle, ["true"], root={"path": "no-such-rootfs"})
    for verb in ("create", "run"):
        cid = f"e2e-refused-{verb}-{secrets.token_hex(3)}"
        status, _, stderr = call(arch, ["--root", runc_root, verb, "--bundle", str(bundle), cid],
                                 env)
        want = call(RUNC, ["--root", runc_root, verb, "--bundle", str(bundle), cid + "-runc"],
                    env)
        assert status != 0 and status == want[0], (status, stderr, want)
        wait_no_record(archctl_cli, cid, f"a {verb} that runc refused")


def test_kept_container_stays_recorded_until_delete(arch, env, runc_root, bundle, archctl_cli):
    set_spec(bundle, ["sleep", "1000"])
    cid = f"e2e-kept-{secrets.token_hex(3)}"
    args = ["--root", runc_root, "create", "--bundle", str(bundle), cid]
    try:
        assert call(arch, args, env)[0] == 0
        # A second create of the same id is refused by runc: the first container's record stays.
        assert call(arch, args, env)[0] != 0
        assert call(arch, ["--root", runc_root, "start", cid], env)[0] == 0
        proc.wait_until(lambda: [r for r in records(archctl_cli, cid)
                                 if r["status"] == "running"], 10, f"{cid} recorded, running")
        assert call(arch, ["--root", runc_root, "kill", cid, "KILL"], env)[0] == 0
        proc.wait_until(lambda: [r for r in records(archctl_cli, cid)
                                 if r["status"] == "stopped"], 10, f"{cid} recorded, stopped")
        assert records(archctl_cli, cid), "the record of a container runc keeps went away"
        assert call(arch, ["--root", runc_root, "delete", cid], env)[0] == 0
    finally:
        call(RUNC, ["--root", runc_root, "delete", "--force", cid], env)
    assert not records(archctl_cli, cid)


def test_hooks_and_the_container_do_not_see_the_loop_marker(arch, env, runc_root, bundle,
                                                            tmp_path):
    hook_env, hook_call = tmp_path / "hook-env", tmp_path / "hook-call"
    script = (f"env > {hook_env}; {arch} --root {runc_root} list > {hook_call} 2>&1; "
              f"echo status=$? >> {hook_call}")
    hooks = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", script]}]}
    set_spec(bundle, ["env"], enable=False, hooks=hooks)
    cid = f"e2e-hook-{secrets.token_hex(3)}"
    try:
        status, stdout, stderr = call(arch, ["--root", runc_root, "run", "--bundle", str(bundle),
                                             cid], env)
    finally:
        call(RUNC, ["--root", runc_root, "delete", "--force", cid], env)
    assert status == 0, stderr
    assert "ARCH_CONFIG=" in hook_env.read_text(), "the hook did not get runc's environment"
    assert "_ARCH_RUNC_HOP" not in hook_env.read_text(), "the hook inherited the loop marker"
    assert "_ARCH_RUNC_HOP" not in stdout, "the container inherited the loop marker"
    text = hook_call.read_text()
    assert "status=0" in text and "leads back" not in text, text


@pytest.mark.parametrize("how", ["exec", "child"])
def test_a_runc_leading_back_to_arch_runc_is_refused(arch, runc_root, node_config, tmp_path,
                                                     how):
    wrapper = daemons.write_script(str(tmp_path / "wrapper" / "runc"),
                                   f'{"exec " if how == "exec" else ""}{arch} "$@"\n')
    config = daemons.write_node_config(str(tmp_path / "etc"), node_config.log_file,
                                       runc=wrapper, keys=node_config.keys)
    status, _, stderr = call(arch, ["--root", runc_root, "list"],
                             dict(os.environ, ARCH_CONFIG=config))
    assert status == 1 and "leads back to arch-runc" in stderr, (status, stderr)
