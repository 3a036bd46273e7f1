"""The node config fails loudly and archctl answers like an operator's tool: the README's
config snippets are accepted as shown, a typo is an error with its line and the fix
(archctl and archd refuse to act, arch-runc passes calls through), a missing ARCH_CONFIG
file is an error, typos in commands get a suggestion, errors are JSON under -o json, and
the bash completion knows archctl's commands."""

import json
import os
import re
import subprocess

import pytest

from conftest import build_dir, skip_unless_root

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def archctl(archctl_bin):
    return archctl_bin


def run(argv, env=None, stdin=None):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, input=stdin)


def write_conf(tmp_path, text, name="arch.conf"):
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755, exist_ok=True)
    conf = etc / name
    conf.write_text(text)
    conf.chmod(0o644)
    return conf


def with_config(conf):
    return dict(os.environ, ARCH_CONFIG=str(conf))


def readme_ini_blocks():
    text = open(os.path.join(REPO, "README.md")).read()
    return re.findall(r"```ini\n(.*?)```", text, re.S)


def test_readme_config_snippets_are_accepted_as_shown(archctl, tmp_path):
    skip_unless_root()
    blocks = readme_ini_blocks()
    assert blocks, "the README shows no ini block"
    for i, block in enumerate(blocks):
        conf = write_conf(tmp_path, block, f"readme-{i}.conf")
        r = run([archctl, "config", "check", str(conf)])
        assert r.returncode == 0, f"README block {i} refused:\n{block}\n{r.stdout}{r.stderr}"
        assert "ok" in r.stdout


def test_a_typo_in_the_config_is_an_error_everywhere_but_arch_runc(archctl, require_arch_runc,
                                                                    tmp_path):
    skip_unless_root()
    conf = write_conf(tmp_path, "[store]\npath = /var/lib/arch/checkpoints\nkeeep = 3\n")
    env = with_config(conf)
    r = run([archctl, "config", "check", str(conf)])
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "line 3" in r.stderr and "did you mean 'keep'" in r.stderr, r.stderr

    # archctl refuses to act on a policy it could not read.
    for argv in (["container", "list"], ["checkpoint", "list"], ["key", "list"]):
        r = run([archctl, *argv], env=env)
        assert r.returncode == 2, (argv, r.returncode, r.stdout, r.stderr)
        assert "keeep" in r.stderr and "archctl config check" in r.stderr, (argv, r.stderr)

    # archd does not start on it.
    archd = os.path.join(build_dir(), "src", "agent", "archd")
    if os.access(archd, os.X_OK):
        p = subprocess.run([archd, "--config", str(conf), "--foreground"], capture_output=True,
                           text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert p.returncode == 2, (p.returncode, p.stderr)
        assert "keeep" in p.stderr and "not starting" in p.stderr, p.stderr

    # arch-runc passes the call through to runc unchanged.
    root = tmp_path / "runc-root"
    root.mkdir(mode=0o700)
    plain = run(["runc", "--root", str(root), "list"])
    through = run([require_arch_runc, "--root", str(root), "list"], env=env)
    assert through.returncode == 0 and through.stdout == plain.stdout, through.stderr


def test_an_untrusted_or_missing_named_config_is_an_error(archctl, tmp_path):
    skip_unless_root()
    missing = tmp_path / "nope.conf"
    r = run([archctl, "checkpoint", "list"], env=with_config(missing))
    assert r.returncode == 2 and "no such file" in r.stderr, r.stderr

    conf = write_conf(tmp_path, "[log]\nlevel = info\n")
    conf.chmod(0o666)
    r = run([archctl, "config", "check", str(conf)])
    assert r.returncode == 2 and "writable by group or others" in r.stderr, r.stderr
    assert "chmod go-w" in r.stderr, r.stderr
    r = run([archctl, "container", "list"], env=with_config(conf))
    assert r.returncode == 2, r.stderr

    conf.chmod(0o644)
    r = run([archctl, "config", "check", str(conf)])
    assert r.returncode == 0, r.stderr


def test_command_typos_get_a_suggestion_and_usage_exit_code(archctl):
    cases = [
        (["contaner", "list"], "did you mean 'container'"),
        (["container", "lst"], "did you mean 'list'"),
        (["checkpoint", "list", "--stor", "/x"], "did you mean '--store'"),
    ]
    for argv, words in cases:
        r = run([archctl, *argv])
        assert r.returncode == 2, (argv, r.returncode, r.stderr)
        assert words in r.stderr, (argv, r.stderr)


def test_errors_are_json_under_output_json(archctl, tmp_path):
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    r = run([archctl, "checkpoint", "inspect", "default/nothing-here", "--store", str(store),
             "-o", "json"])
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    err = json.loads(r.stdout)["error"]
    assert err["kind"] == "not-found" and err["exit_code"] == 3 and err["message"], err

    r = run([archctl, "contaner", "list", "-o", "json"])
    assert r.returncode == 2
    err = json.loads(r.stdout)["error"]
    assert err["kind"] == "invalid-input" and "container" in err["message"], err


def test_bash_completion_knows_the_commands(archctl):
    r = run([archctl, "completion", "bash"])
    assert r.returncode == 0, r.stderr

    def complete(*words):
        script = (r.stdout + "\nCOMP_WORDS=(" + " ".join(f"'{w}'" for w in words) + ")\n"
                  f"COMP_CWORD={len(words) - 1}\n_archctl\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert complete("archctl", "cont") == ["container"]
    assert set(complete("archctl", "container", "")) >= {"list", "checkpoint", "finalize"}
    assert "--store" in complete("archctl", "checkpoint", "list", "--st")
    assert complete("archctl", "zzz") == []


def test_finalize_shows_progress_only_on_a_terminal(archctl, tmp_path):
    skip_unless_root()
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    conf = write_conf(tmp_path, f"[state]\ndir = {state}\n")
    env = with_config(conf)
    cmd = f"{archctl} container finalize --deadline 5"
    # `script` gives archctl a terminal (util-linux); its output is the terminal's.
    on_tty = run(["script", "-qec", cmd, "/dev/null"], env=env)
    assert on_tty.returncode == 0, on_tty.stdout
    assert "finalizing 0 containers" in on_tty.stdout, on_tty.stdout
    quiet = run(["script", "-qec", cmd + " -q", "/dev/null"], env=env)
    assert quiet.returncode == 0 and "finalizing" not in quiet.stdout, quiet.stdout
    piped = run([*cmd.split()], env=env)
    assert piped.returncode == 0 and "finalizing" not in piped.stderr + piped.stdout
