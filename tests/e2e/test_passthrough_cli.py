"""arch-runc called directly behaves exactly like runc called with the same argv.

The reference for every call is runc started with arch-runc's argv unchanged
(argv[0] included: runc prints it in help texts), which is what a transparent
`execv` pass-through produces.  Exit status, stdout and stderr must be equal, with
only log timestamps normalised.  Without `--log`, each call must add one
pass-through line to the node config's [log] file.
"""

import json
import os
import re
import secrets
import subprocess
import tarfile
import tempfile

import pytest

from archtest import daemons, image, proc, runtime_log
from conftest import skip_unless_binaries, skip_unless_root

RUNC = daemons.RUNC


@pytest.fixture
def arch(require_arch_runc):
    return require_arch_runc


@pytest.fixture
def env(node_config):
    return dict(os.environ, ARCH_CONFIG=node_config.path)


@pytest.fixture
def runc_root(tmp_path):
    path = tmp_path / "runc-root"
    path.mkdir(mode=0o700)
    return str(path)


def call(argv0, args, env, executable=None, cwd=None):
    """Runs argv0 args (as `executable` if given); returns (status, stdout, stderr).

    Output goes to files, not pipes: `create` leaves the container's init holding them.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        r = subprocess.run([argv0, *args], executable=executable, env=env, cwd=cwd,
                           stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=60)
        out.seek(0)
        err.seek(0)
        return r.returncode, out.read().decode(), err.read().decode()


def normalise(text):
    text = re.sub(r'time="[^"]*"', 'time="<time>"', text)
    return re.sub(r'"time":"[^"]*"', '"time":"<time>"', text)


class NodeLog:
    """The node config's [log] file, read from where a test started."""

    def __init__(self, path):
        self.path = path
        self.start = os.path.getsize(path) if os.path.exists(path) else 0

    def new_records(self):
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            f.seek(self.start)
            return runtime_log.parse_json_lines(f.read())


def pass_through_lines(records):
    return [r for r in records if "pass-through to " + RUNC in json.dumps(r)]


def assert_same_as_runc(arch, args, env, cwd=None):
    log = NodeLog(node_log_path(env))
    got = call(arch, args, env, cwd=cwd)
    want = call(arch, args, env, executable=RUNC, cwd=cwd)
    assert got[0] == want[0], f"exit status {got[0]} != runc's {want[0]}: {got}"
    assert got[1] == want[1], "stdout differs from runc's"
    assert normalise(got[2]) == normalise(want[2]), "stderr differs from runc's"
    lines = pass_through_lines(log.new_records())
    assert len(lines) == 1, f"expected one pass-through line in the [log] file, got {lines}"
    return got


def node_log_path(env):
    with open(env["ARCH_CONFIG"]) as f:
        return re.search(r"^file\s*=\s*(.+)$", f.read(), re.M)[1].strip()


ODD_CALLS = {
    "unknown-subcommand": ["no-such-subcommand", "x"],
    "unknown-global-flag": ["--no-such-flag", "list"],
    "unknown-subcommand-flag": ["--root", "{root}", "state", "--no-such-flag", "x"],
    "missing-flag-value": ["--root"],
    "bad-log-format": ["--log-format", "xml", "--root", "{root}", "list"],
    "no-arguments": [],
    "help": ["--help"],
    "subcommand-help": ["create", "--help"],
    "help-topic": ["help", "kill"],
    "state-unknown-container": ["--root", "{root}", "state", "no-such-container"],
    "kill-missing-id": ["--root", "{root}", "kill"],
    "delete-force-unknown": ["--root", "{root}", "delete", "--force", "no-such-container"],
    "list-empty-root": ["--root", "{root}", "list"],
    "list-json": ["--root", "{root}", "list", "--format", "json"],
    "double-dash": ["--root", "{root}", "--", "list"],
    "features": ["features"],
}


@pytest.mark.parametrize("name", sorted(ODD_CALLS))
def test_odd_calls_behave_like_runc(name, arch, env, runc_root):
    args = [a.replace("{root}", runc_root) for a in ODD_CALLS[name]]
    assert_same_as_runc(arch, args, env)


def test_unknown_subcommand_exit_status_and_message(arch, env):
    status, _, stderr = assert_same_as_runc(arch, ["no-such-subcommand"], env)
    assert status == 3 and "No help topic for 'no-such-subcommand'" in stderr


def test_version(arch, env):
    # runc's text exactly: containerd's runc client (go-runc parseVersion) takes the version
    # from the first line only when it starts with "runc version". ARCH's own version is
    # `archctl version`'s (issue 17).
    status, stdout, stderr = call(arch, ["--version"], env)
    want = call(RUNC, ["--version"], env)
    assert status == 0 and stderr == ""
    assert stdout.startswith("runc version "), stdout
    assert stdout == want[1], "runc's version text must be printed unchanged, and alone"


def test_log_file_given_gets_runc_json_format(arch, env, runc_root, tmp_path):
    """With --log FILE --log-format json, arch-runc's line goes to FILE in runc's format."""
    log = NodeLog(node_log_path(env))
    logs = {}
    for who, executable in (("arch", None), ("runc", RUNC)):
        path = tmp_path / f"{who}.json"
        args = ["--root", runc_root, "--log", str(path), "--log-format", "json", "state", "nope"]
        logs[who] = (call(arch, args, env, executable=executable), path.read_text())
    assert logs["arch"][0][0] == logs["runc"][0][0] == 1
    assert normalise(logs["arch"][0][2]) == normalise(logs["runc"][0][2])
    arch_records = runtime_log.parse_json_lines(logs["arch"][1])
    runc_records = runtime_log.parse_json_lines(logs["runc"][1])
    subs = runtime_log.check_pass_through_records(arch_records, "nope", RUNC)
    assert subs == ["state"], arch_records
    others = [r for r in arch_records if not str(r.get("msg", "")).startswith("arch-runc")]
    assert normalise(json.dumps(others)) == normalise(json.dumps(runc_records))
    assert pass_through_lines(log.new_records()) == [], "the line must not go to [log] file"


def test_spec_writes_the_same_config(arch, env, tmp_path):
    for who, executable in (("arch", None), ("runc", RUNC)):
        (tmp_path / who).mkdir()
        assert call(arch, ["spec", "--rootless"], env, executable=executable,
                    cwd=tmp_path / who)[0] == 0
    assert (tmp_path / "arch" / "config.json").read_bytes() == \
        (tmp_path / "runc" / "config.json").read_bytes()


# ------------------------------------------------- direct container lifecycle (root)

@pytest.fixture
def bundle(tmp_path):
    skip_unless_root()
    skip_unless_binaries(RUNC)
    path = tmp_path / "bundle"
    (path / "rootfs").mkdir(parents=True)
    layer = tmp_path / "layer.tar"
    layer.write_bytes(image.build_layer())
    with tarfile.open(layer) as tar:
        tar.extractall(path / "rootfs")
    subprocess.run([RUNC, "spec"], cwd=path, check=True)
    return path


def set_process(bundle, args):
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    (bundle / "config.json").write_text(json.dumps(spec))


def test_direct_run(arch, env, runc_root, bundle):
    set_process(bundle, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    results = {}
    for who, executable in (("arch", None), ("runc", RUNC)):
        cid = f"e2e-direct-{who}-{secrets.token_hex(3)}"
        log = NodeLog(node_log_path(env))
        results[who] = call(arch, ["--root", runc_root, "run", "--bundle", str(bundle), cid],
                            env, executable=executable)
        lines = pass_through_lines(log.new_records())
        if who == "arch":
            assert len(lines) == 1 and f" run {cid}:" in lines[0]["msg"], lines
    assert results["arch"] == results["runc"] == (3, "out\n", "err\n")


def stopped(root, cid, env):
    status, out, _ = call(RUNC, ["--root", root, "state", cid], env)
    return status != 0 or json.loads(out)["status"] == "stopped"


def lifecycle(arch, executable, env, root, bundle):
    """create, state, start, pause, resume, kill, delete; returns normalised states."""
    cid = f"e2e-direct-{'runc' if executable else 'arch'}-{secrets.token_hex(3)}"
    seen = []

    def runc(*args):
        status, out, err = call(arch, ["--root", root, *args], env, executable=executable)
        out = out.replace(cid, "<id>")
        err = normalise(err).replace(cid, "<id>")
        if args[0] == "state" and status == 0:
            state = json.loads(out)
            out = {k: state.get(k) for k in ("ociVersion", "id", "status", "bundle", "rootfs")}
        seen.append([args[0], status, out, err])

    try:
        runc("create", "--bundle", str(bundle), cid)
        runc("state", cid)
        runc("start", cid)
        runc("state", cid)
        runc("pause", cid)
        runc("state", cid)
        runc("resume", cid)
        runc("kill", cid, "KILL")
        proc.wait_until(lambda: stopped(root, cid, env), 30, f"{cid} to stop")
        runc("state", cid)
        runc("delete", cid)
        runc("state", cid)
    finally:
        call(RUNC, ["--root", root, "delete", "--force", cid], env)
    return cid, seen


def test_direct_lifecycle(arch, env, runc_root, bundle):
    set_process(bundle, ["sleep", "1000"])
    log = NodeLog(node_log_path(env))
    cid, got = lifecycle(arch, None, env, runc_root, bundle)
    arch_lines = pass_through_lines(log.new_records())
    _, want = lifecycle(arch, RUNC, env, runc_root, bundle)
    assert got == want
    statuses = [s[2]["status"] for s in want if s[0] == "state" and s[1] == 0]
    assert statuses == ["created", "running", "paused", "stopped"]
    assert want[-1][1] != 0 and "does not exist" in want[-1][3]
    subs = [re.match(r"arch-runc: (\S+) ", r["msg"])[1] for r in arch_lines]
    assert subs == [s[0] for s in got], arch_lines
    assert all(f" {cid}: pass-through" in r["msg"] for r in arch_lines), arch_lines
