"""Process jobs end to end: archd starts Python, C and shell jobs, `archctl job checkpoint`
dumps them with CRIU (through its RPC protocol) into the checkpoint store and an archive,
and `archctl job restore` brings them back as archd's children: the counter continues
without gap or repeat, through the job's open file, the pipe between its processes, its
cwd and environment, and its log continues. An archive made on one node restores on a
second (another archd with its own state directory and store); missing, truncated and
corrupted archives and a mapped file that changed fail clearly and restore nothing; two
jobs checkpoint at once; a process ARCH did not start is checkpointed and restored; a job
survives an archd restart (detached) and is re-adopted by a checkpoint and restore.

Every test starts its own archd instances by pid and stops them (jobs killed and removed).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import pytest

from conftest import archd_path, archctl_path, skip_unless_binaries, skip_unless_root
from archtest import proc, terminal
from archtest.jobs import (PY_JOB, SH_JOB, Node, assert_consecutive, compile_c_job, counts,
                           lines, pid_gone, wait_count)


@pytest.fixture
def nodes(node_config, e2e_dir):
    """make(jobs_section="") -> a started Node; all are cleaned up after the test."""
    skip_unless_root()
    skip_unless_binaries(archd_path(), archctl_path())
    if node_config.criu is None:
        pytest.skip("no CRIU at $ARCH_CRIU_PREFIX/bin/criu")
    made = []

    def make(jobs_section=""):
        base = tempfile.mkdtemp(prefix="jobnode-", dir=e2e_dir)
        n = Node(archd_path(), archctl_path(), base, node_config, jobs_section).start()
        made.append(n)
        return n

    yield make
    errors = []
    for n in made:  # every node, even when one fails to stop
        try:
            n.cleanup()
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def workdir(e2e_dir):
    d = tempfile.mkdtemp(prefix="job-", dir=e2e_dir)
    env_file = os.path.join(d, "job.env")
    with open(env_file, "w") as f:
        f.write("# the job's tag\nJOB_TAG=tag-" + os.path.basename(d) + "\n")
    return d, env_file


@pytest.fixture(scope="module")
def c_job(e2e_dir):
    if not shutil.which("cc"):
        pytest.skip("no C compiler")
    d = tempfile.mkdtemp(prefix="cjob-", dir=e2e_dir)
    return compile_c_job(d)


def check_rows(path, tag, cwd, at_least):
    """count.txt: numbers 0..n-1 in order, each with the job's tag and cwd."""
    assert_consecutive(path, at_least)
    bad = [row for row in lines(path) if row[1:] != [tag, cwd]]
    assert not bad, f"rows without the job's environment/cwd: {bad[:3]}"


def checkpoint_and_restore(node, job_id, count_file, extra_lines=25):
    """Checkpoint (the job stops), check it stopped, restore, wait for progress."""
    before = node.job(job_id)
    out = node.checkpoint(job_id)
    assert out["job"]["state"] == "checkpointed", out
    assert os.path.isfile(os.path.join(out["checkpoint"], "manifest.json"))
    proc.wait_until(lambda: pid_gone(before["pid"]), 10, "the dumped job to be gone")
    n = len(counts(count_file))
    restored = node.restore(job_id)
    assert restored["state"] == "running" and restored["pid"] == before["pid"], restored
    assert restored["restores"] == before["restores"] + 1
    wait_count(count_file, n + extra_lines)
    return n


@pytest.mark.parametrize("kind", ["python", "c", "shell"])
def test_job_continues_after_restore(nodes, workdir, c_job, kind):
    node = nodes()
    d, env_file = workdir
    argv = {"python": [sys.executable, "-c", PY_JOB], "c": [c_job],
            "shell": ["/bin/sh", "-c", SH_JOB]}[kind]
    job_id = node.run_job(d, *argv, name=f"{kind}-job", env_file=env_file)
    count_file = os.path.join(d, "count.txt")
    wait_count(count_file, 20)
    job = node.job(job_id)
    assert job["state"] == "running" and job["name"] == f"{kind}-job" and job["pid"] > 0

    checkpoint_and_restore(node, job_id, count_file)
    tag = open(env_file).read().split("JOB_TAG=")[1].strip()
    check_rows(count_file, tag, d, 45)
    # The log continued: its ticks, too, count up without gap or repeat.
    ticks = [int(line.split()[1]) for line in node.logs(job_id).splitlines()
             if line.startswith("tick ")]
    assert ticks == list(range(len(ticks))) and len(ticks) >= 45, ticks[:5]

    # archd reaps the restored tree and records how it ended.
    node.ctl("job", "kill", job_id)
    job = node.wait_state(job_id, "exited")
    assert job["exit_signal"] == signal.SIGTERM or job["exit_code"] in (143, 0), job
    assert "exited" in node.ctl("job", "ps").stdout
    node.ctl("job", "rm", job_id)
    assert job_id not in node.jobs()
    assert not os.path.exists(os.path.join(node.store, "jobs", job_id))
    # Each step is in archd's event log.
    outcomes = [e["outcome"] for e in node.archd.events()
                if e["kind"] == "job" and e["id"] == job_id]
    assert outcomes == ["started", "checkpointed", "restored", "exited", "removed"], outcomes


def test_leave_running_then_restore_goes_back(nodes, workdir):
    """--leave-running: the job keeps running; a later restore resumes from the dump."""
    node = nodes()
    d, env_file = workdir
    job_id = node.run_job(d, "/bin/sh", "-c", SH_JOB, env_file=env_file)
    count_file = os.path.join(d, "count.txt")
    wait_count(count_file, 10)
    out = node.checkpoint(job_id, "--leave-running")
    assert out["job"]["state"] == "running"
    at_dump = len(counts(count_file))
    wait_count(count_file, at_dump + 30)  # still running
    node.ctl("job", "kill", "-s", "KILL", job_id)
    job = node.wait_state(job_id, "exited")
    assert job["exit_signal"] == 9 and job["exit_code"] == 137
    before = len(counts(count_file))
    node.restore(job_id)
    wait_count(count_file, before + 10)
    after = counts(count_file)[before:]
    # Resumed from the dump: numbers continue from where the checkpoint was, not the kill.
    assert after[0] <= at_dump + 2 and after[0] < before, (at_dump, before, after[:3])
    assert after == list(range(after[0], after[0] + len(after)))


BIG_JOB = ("import os, time\n"
           "blob = os.urandom(256 << 20)\n"
           "open('ready', 'w').write('1')\n"
           "n = 0\n"
           "while True:\n"
           "    n += 1\n"
           "    open('count.txt', 'a').write(f'{n}\\n')\n"
           "    time.sleep(0.05)\n")


def on_a_terminal(node, *args):
    return terminal.run_on_terminal([node.archctl_binary, *args], env=node.archd.env())


def test_restore_from_an_archive_shows_its_bytes_on_a_terminal_only(nodes, workdir):
    """`job restore --from` of a 256 MiB job on another node: on a terminal, the archive's
    bytes as archd imports it (polled from GET /v1/imports) ending at 100%; nothing on
    stdout; with -q, nothing on the terminal. The job continues either way."""
    a, b = nodes(), nodes()
    d, _ = workdir
    export_dir = tempfile.mkdtemp(prefix="exports-", dir=os.path.dirname(d))
    job_id = a.run_job(d, sys.executable, "-c", BIG_JOB, name="big")
    proc.wait_until(lambda: os.path.exists(os.path.join(d, "ready")), 60, "256 MiB in memory")
    wait_count(os.path.join(d, "count.txt"), 3)
    out = a.checkpoint(job_id, "--export", export_dir)
    archive = out["archive"]
    assert os.path.getsize(archive) > 200 << 20
    proc.wait_until(lambda: pid_gone(out["job"]["pid"]), 10, "the dumped job to be gone")
    code, shown, stdout, seconds = on_a_terminal(b, "job", "restore", "--from", archive)
    assert code == 0, shown + stdout
    assert "restored job" in stdout and "MiB" not in stdout, stdout
    # Polled every 200 ms: an import shorter than that may end before the first look.
    if seconds > 1.5:
        assert re.search(r"restore: \d+ / \d+ MiB \(\d+%\)", shown), (seconds, repr(shown))
    print(f"\nrestore --from of {os.path.getsize(archive) >> 20} MiB: {seconds:.2f} s; "
          f"terminal: {shown.strip()[-80:]!r}")
    n = len(counts(os.path.join(d, "count.txt")))
    wait_count(os.path.join(d, "count.txt"), n + 5)
    out = b.checkpoint(job_id, "--export", export_dir)
    proc.wait_until(lambda: pid_gone(out["job"]["pid"]), 10, "the dumped job to be gone")
    b.ctl("job", "rm", job_id)
    c = nodes()
    code, shown, stdout, _ = on_a_terminal(c, "job", "restore", "-q", "--from", out["archive"])
    assert code == 0 and "restore:" not in shown, repr(shown)


def test_export_on_one_node_restore_on_another(nodes, workdir):
    a = nodes()
    b = nodes()
    d, env_file = workdir
    export_dir = tempfile.mkdtemp(prefix="exports-", dir=os.path.dirname(d))
    job_id = a.run_job(d, sys.executable, "-c", PY_JOB, name="sim", env_file=env_file)
    count_file = os.path.join(d, "count.txt")
    wait_count(count_file, 20)
    out = a.checkpoint(job_id, "--export", export_dir)
    archive = out["archive"]
    assert os.path.dirname(archive) == export_dir
    name = os.path.basename(archive)
    assert name.startswith("sim_") and name.endswith("Z.tar.zst"), name
    assert os.listdir(export_dir) == [name], "temp files left beside the archive"
    assert a.job(job_id)["checkpoint"]["archive"] == archive
    assert archive in a.ctl("job", "ps").stdout
    proc.wait_until(lambda: pid_gone(out["job"]["pid"]), 10, "the dumped job to be gone")
    n = len(counts(count_file))
    a_log = a.logs(job_id)

    restored = b.restore("--from", archive)
    assert restored["id"] == job_id and restored["state"] == "running"
    assert restored["pid"] == out["job"]["pid"]
    wait_count(count_file, n + 25)
    tag = open(env_file).read().split("JOB_TAG=")[1].strip()
    check_rows(count_file, tag, d, n + 25)
    # The log continues on B (B's own state directory); A's log stays as it was.
    b_log = b.logs(job_id)
    assert b_log.startswith("tick ") and int(b_log.split()[1]) > 0
    assert b.job(job_id)["log"].startswith(b.jobs_dir)
    assert a.logs(job_id) == a_log
    # B's own checkpoint restores on B, and B's export on a third node after B forgot the
    # job (its log there is gone): the job's output is always the restoring node's log.
    checkpoint_and_restore(b, job_id, count_file, extra_lines=10)
    ticks = [int(line.split()[1]) for line in b.logs(job_id).splitlines()]
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), ticks[:5]
    out_b = b.checkpoint(job_id, "--export", export_dir)
    b.ctl("job", "rm", job_id)
    c = nodes()
    n = len(counts(count_file))
    c.restore("--from", out_b["archive"])
    wait_count(count_file, n + 10)
    assert_consecutive(count_file, n + 10)
    assert c.logs(job_id).startswith("tick ")
    # While it runs on C, neither A (its own older checkpoint) nor a fourth node can restore
    # it: its pids are taken. Nothing is left behind by the refusals.
    r = a.ctl("job", "restore", job_id, check=False)
    assert r.returncode != 0 and "still runs" in r.stderr, r.stderr
    assert a.job(job_id)["state"] == "checkpointed"
    d4 = nodes()
    r = d4.ctl("job", "restore", "--from", out_b["archive"], check=False)
    assert r.returncode != 0 and "still runs" in r.stderr, r.stderr
    assert d4.jobs() == {}
    assert not os.path.exists(d4.jobs_dir) or os.listdir(d4.jobs_dir) == ["jobs.json"]
    c.ctl("job", "kill", job_id)
    assert c.wait_state(job_id, "exited")["exit_signal"] == signal.SIGTERM


def test_bad_archives_restore_nothing(nodes, workdir):
    a = nodes()
    b = nodes()
    d, env_file = workdir
    export_dir = tempfile.mkdtemp(prefix="exports-", dir=os.path.dirname(d))
    job_id = a.run_job(d, "/bin/sh", "-c", SH_JOB, env_file=env_file)
    count_file = os.path.join(d, "count.txt")
    wait_count(count_file, 10)
    out = a.checkpoint(job_id, "--export", export_dir)
    good = out["archive"]
    data = open(good, "rb").read()
    truncated = os.path.join(export_dir, "truncated.tar.zst")
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    corrupted = os.path.join(export_dir, "corrupted.tar.zst")
    damaged = bytearray(data)
    for i in range(len(damaged) // 3, len(damaged) // 3 + 64):
        damaged[i] ^= 0x5A
    with open(corrupted, "wb") as f:
        f.write(bytes(damaged))
    not_an_archive = os.path.join(export_dir, "notes.tar.zst")
    with open(not_an_archive, "w") as f:
        f.write("not an archive\n")

    cases = {os.path.join(export_dir, "missing.tar.zst"): "does not exist|No such file",
             truncated: "damaged|truncated|Truncated|verify",
             corrupted: "damaged|verify|corrupt|checksum|Zstd",
             not_an_archive: "not a readable archive|damaged|Unrecognized"}
    import re
    for path, why in cases.items():
        r = b.ctl("job", "restore", "--from", path, check=False)
        assert r.returncode != 0, f"{path} restored?\n{r.stdout}"
        assert re.search(why, r.stderr), f"{path}: unclear error: {r.stderr}"
        assert path in r.stderr
        assert b.jobs() == {}, "a job record was left by a failed restore"
        assert pid_gone(out["job"]["pid"])
        leftovers = os.listdir(os.path.join(b.store, "jobs")) if os.path.isdir(
            os.path.join(b.store, "jobs")) else []
        assert leftovers == [], f"B's store kept {leftovers}"
    # Nothing lost: the good archive still restores.
    n = len(counts(count_file))
    b.restore("--from", good)
    wait_count(count_file, n + 10)
    assert_consecutive(count_file, n + 10)
    # Its next checkpoint, on B, names B's log; the log may be rotated away before the
    # restore: the job then writes to a new one.
    b.checkpoint(job_id)
    log = b.job(job_id)["log"]
    os.rename(log, log + ".1")
    b.restore(job_id)
    grown = len(counts(count_file))
    wait_count(count_file, grown + 10)
    proc.wait_until(lambda: os.path.exists(log) and os.path.getsize(log) > 0, 10,
                    "the job to write to its new log")


def test_mapped_file_changed_since_dump(nodes, workdir, c_job):
    node = nodes()
    d, env_file = workdir
    data = os.path.join(d, "data.bin")
    with open(data, "wb") as f:
        f.write(b"\0" * 8192)
    job_id = node.run_job(d, c_job, data, env_file=env_file)
    count_file = os.path.join(d, "count.txt")
    wait_count(count_file, 10)
    out = node.checkpoint(job_id)
    proc.wait_until(lambda: pid_gone(out["job"]["pid"]), 10, "the dumped job to be gone")
    with open(data, "ab") as f:
        f.write(b"x" * 4096)
    r = node.ctl("job", "restore", job_id, check=False)
    assert r.returncode != 0
    assert "data.bin" in r.stderr and "size" in r.stderr, r.stderr
    assert node.job(job_id)["state"] == "checkpointed"
    assert pid_gone(out["job"]["pid"]), "a half-restored process was left running"
    # Put the file back as it was: the same checkpoint restores.
    with open(data, "r+b") as f:
        f.truncate(8192)
    n = len(counts(count_file))
    node.restore(job_id)
    wait_count(count_file, n + 10)
    assert_consecutive(count_file, n + 10)


def test_two_jobs_checkpointed_at_once(nodes, workdir, e2e_dir):
    node = nodes()
    d1, env_file = workdir
    d2 = tempfile.mkdtemp(prefix="job-", dir=e2e_dir)
    j1 = node.run_job(d1, sys.executable, "-c", PY_JOB, name="one", env_file=env_file)
    j2 = node.run_job(d2, sys.executable, "-c", PY_JOB, name="two", env_file=env_file)
    f1, f2 = os.path.join(d1, "count.txt"), os.path.join(d2, "count.txt")
    wait_count(f1, 15)
    wait_count(f2, 15)
    p1 = node.ctl_async("job", "checkpoint", j1)
    p2 = node.ctl_async("job", "checkpoint", j2)
    for p in (p1, p2):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    jobs = node.jobs()
    assert jobs[j1]["state"] == jobs[j2]["state"] == "checkpointed"
    n1, n2 = len(counts(f1)), len(counts(f2))
    node.restore(j1)
    node.restore(j2)
    wait_count(f1, n1 + 15)
    wait_count(f2, n2 + 15)
    assert_consecutive(f1, n1 + 15)
    assert_consecutive(f2, n2 + 15)


def test_process_not_started_by_arch(nodes, workdir):
    node = nodes()
    d, env_file = workdir
    export_dir = tempfile.mkdtemp(prefix="exports-", dir=os.path.dirname(d))
    env = dict(os.environ, JOB_TAG="outside")
    count_file = os.path.join(d, "count.txt")
    p = subprocess.Popen([sys.executable, "-c", PY_JOB], cwd=d, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_count(count_file, 10)
        r = node.ctl("process", "checkpoint", str(p.pid), "--export", export_dir)
        assert "checkpointed pid" in r.stdout and "exported:" in r.stdout
        assert p.wait(10) == -signal.SIGKILL  # CRIU ended it after the dump
        archive = [line.split(": ", 1)[1] for line in r.stdout.splitlines()
                   if line.startswith("exported:")][0]
        n = len(counts(count_file))
        r = node.ctl("process", "restore", archive)
        assert f"pid {p.pid}" in r.stdout, r.stdout
        wait_count(count_file, n + 15)
        check_rows(count_file, "outside", d, n + 15)
        job = [j for j in node.jobs().values() if j["pid"] == p.pid][0]
        assert job["kind"] == "process" and job["state"] == "running"
        node.ctl("job", "kill", job["id"])
        assert node.wait_state(job["id"], "exited")["exit_signal"] == signal.SIGTERM
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def unix_server_and_client(d):
    """A listening unix socket in `d` (ours, outside any job) and the Python code of a
    client that connects to it and idles: what CRIU refuses to dump."""
    path = os.path.join(d, "s.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    code = ("import socket, time\ns = socket.socket(socket.AF_UNIX)\n"
            f"s.connect({path!r})\nwhile True: time.sleep(0.05)\n")
    return server, code


def test_process_with_external_socket_fails_with_reason(nodes, workdir):
    node = nodes()
    d, _ = workdir
    server, code = unix_server_and_client(d)
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        conn, _ = server.accept()
        r = node.ctl("process", "checkpoint", str(p.pid), check=False)
        assert r.returncode != 0
        assert "criu dump failed" in r.stderr and "warning:" in r.stderr, r.stderr
        assert "socket" in r.stderr
        assert p.poll() is None, "a failed dump must leave the process running"
        assert node.jobs() == {}
        conn.close()
    finally:
        p.kill()
        p.wait()
        server.close()


def test_job_survives_archd_restart_detached(nodes, workdir):
    node = nodes()
    d, env_file = workdir
    job_id = node.run_job(d, "/bin/sh", "-c", SH_JOB, env_file=env_file)
    count_file = os.path.join(d, "count.txt")
    wait_count(count_file, 10)
    assert node.archd.stop() == 0
    n = len(counts(count_file))
    wait_count(count_file, n + 10)  # it runs on without archd
    node.archd.start()
    assert node.job(job_id)["state"] == "detached"
    # A checkpoint and restore makes it archd's child again: its exit is seen.
    checkpoint_and_restore(node, job_id, count_file, extra_lines=10)
    assert_consecutive(count_file, n + 20)
    node.ctl("job", "kill", job_id)
    assert node.wait_state(job_id, "exited")["exit_signal"] == signal.SIGTERM


def test_job_cli_errors(nodes, workdir):
    node = nodes()
    d, _ = workdir
    r = node.ctl("job", "run", "--dir", d, "--", "no-such-program-xyz", check=False)
    assert r.returncode != 0 and "not found" in r.stderr
    r = node.ctl("job", "checkpoint", "nope", check=False)
    assert r.returncode != 0 and "no job 'nope'" in r.stderr
    r = node.ctl("job", "restore", "nope", check=False)
    assert r.returncode != 0 and "no job 'nope'" in r.stderr
    job_id = node.run_job(d, "/bin/sh", "-c", "echo hello; exit 3")
    job = node.wait_state(job_id, "exited")
    assert job["exit_code"] == 3
    assert node.logs(job_id) == "hello\n"
    r = node.ctl("job", "checkpoint", job_id, check=False)
    assert r.returncode != 0 and "not running" in r.stderr
    r = node.ctl("job", "restore", job_id, check=False)
    assert r.returncode != 0 and "no checkpoint" in r.stderr
    # logs -f follows a running job to its end.
    job_id = node.run_job(d, "/bin/sh", "-c", "for i in 1 2 3 4 5; do echo $i; sleep 0.1; done")
    assert node.ctl("job", "logs", "-f", job_id).stdout == "1\n2\n3\n4\n5\n"
    assert node.job(job_id)["state"] == "exited"
    r = node.ctl("job", "rm", "nope", check=False)
    assert r.returncode != 0 and "no job 'nope'" in r.stderr


def test_dump_dir_from_the_node_config(nodes, workdir, e2e_dir):
    """[jobs] dump_dir exports every checkpoint; compression = none writes a plain tar."""
    dumps = tempfile.mkdtemp(prefix="dumps-", dir=e2e_dir)
    node = nodes(f"dump_dir = {dumps}\ncompression = none\nleave_running = true\n")
    d, env_file = workdir
    job_id = node.run_job(d, "/bin/sh", "-c", SH_JOB, name="nightly", env_file=env_file)
    count_file = os.path.join(d, "count.txt")
    wait_count(count_file, 10)
    out = node.checkpoint(job_id)
    assert out["leave_running"] and out["job"]["state"] == "running"
    name = os.path.basename(out["archive"])
    assert os.path.dirname(out["archive"]) == dumps
    assert name.startswith("nightly_") and name.endswith("Z.tar"), name
    assert open(out["archive"], "rb").read(262)[257:262] == b"ustar"  # not compressed
    node.ctl("job", "kill", job_id)
    node.wait_state(job_id, "exited")
    before = len(counts(count_file))
    node.restore("--from", out["archive"])
    wait_count(count_file, before + 10)


def test_config_init(e2e_dir):
    skip_unless_binaries(archctl_path())
    path = os.path.join(tempfile.mkdtemp(prefix="cfg-", dir=e2e_dir), "etc", "arch.conf")
    r = proc.run([archctl_path(), "config", "init", "--path", path])
    assert r.returncode == 0, r.stderr
    text = open(path).read()
    for key in ("[jobs]", "dump_dir =", "compression = zstd", "compression_level = 1",
                "leave_running = false", "[agent]", "[store]"):
        assert key in text
    r = proc.run([archctl_path(), "config", "init", "--path", path])
    assert r.returncode != 0 and "exists" in r.stderr
    r = proc.run([archctl_path(), "config", "show"], env=dict(os.environ, ARCH_CONFIG=path))
    assert r.returncode == 0 and "[jobs]" in r.stdout and "warning" not in r.stderr, r.stderr


def test_drain_checkpoints_jobs(nodes, workdir, e2e_dir):
    """A drain (here by hand; a spot notice does the same) checkpoints every running job,
    exported to [jobs] dump_dir, so it can resume on another node."""
    dumps = tempfile.mkdtemp(prefix="dumps-", dir=e2e_dir)
    node = nodes(f"dump_dir = {dumps}\n")
    d, env_file = workdir
    job_id = node.run_job(d, sys.executable, "-c", PY_JOB, name="spot", env_file=env_file)
    count_file = os.path.join(d, "count.txt")
    wait_count(count_file, 10)
    try:
        r = node.archd.call("POST", "/v1/node/drain", {"reason": "test", "deadline_seconds": 60})
        assert r.status == 202, r.body
        drain = node.archd.wait_drain(r.json()["drain_id"])
        jobs = {j["id"]: j for j in drain["report"].get("jobs", [])}
        assert jobs.get(job_id, {}).get("result") == "checkpointed", drain
        job = node.wait_state(job_id, "checkpointed")
        archive = job["checkpoint"]["archive"]
        assert os.path.dirname(archive) == dumps and os.path.basename(archive).startswith("spot_")
        assert "job " + job_id + ": checkpointed" in node.archd.log_text()
    finally:
        node.archd.call("POST", "/v1/node/undrain")
    other = nodes()
    n = len(counts(count_file))
    other.restore("--from", archive)
    wait_count(count_file, n + 10)
    assert_consecutive(count_file, n + 10)


GHOST_JOB = """
import hashlib, os, time
f = open('ghost.bin', 'w+b')
data = bytes(range(256)) * (32 << 12)  # 8 MiB: above CRIU's own 1 MiB ghost limit
f.write(data); f.flush(); os.unlink('ghost.bin')
want = hashlib.sha256(data).hexdigest(); del data
n = 0
with open('count.txt', 'a') as out:
    while True:
        f.seek(0)
        ok = hashlib.sha256(f.read()).hexdigest() == want
        out.write(f"{n} {'ok' if ok else 'BAD'}\\n"); out.flush(); n += 1; time.sleep(0.05)
"""


def test_job_with_a_deleted_open_file_within_the_ghost_limit(nodes, workdir):
    """An 8 MiB deleted-but-open file (CRIU's own limit is 1 MiB) is dumped under the
    node's [checkpoint] ghost_limit (64M by default) and comes back with its content."""
    node = nodes()
    d, _ = workdir
    job_id = node.run_job(d, sys.executable, "-c", GHOST_JOB, name="ghost")
    count_file = os.path.join(d, "count.txt")
    wait_count(count_file, 5)
    checkpoint_and_restore(node, job_id, count_file, extra_lines=10)
    assert_consecutive(count_file, 15)
    bad = [row for row in lines(count_file) if row[1] != "ok"]
    assert not bad, f"the deleted file's content changed across the restore: {bad[:3]}"


def test_failed_job_dump_keeps_criu_log(nodes, workdir):
    """A job CRIU cannot dump (a unix socket connected to a process outside it) keeps
    running, and CRIU's log is kept in the store as failed-*/dump-logs/dump.log."""
    node = nodes()
    d, _ = workdir
    server, code = unix_server_and_client(d)
    try:
        job_id = node.run_job(d, sys.executable, "-c", code, name="extsock")
        conn, _ = server.accept()
        r = node.ctl("job", "checkpoint", job_id, check=False)
        assert r.returncode != 0, r.stdout
        assert "CRIU's log kept in" in r.stderr, r.stderr
        assert node.job(job_id)["state"] == "running"
        kept = [x for x in os.listdir(os.path.join(node.store, "jobs", job_id))
                if x.startswith("failed-")]
        assert len(kept) == 1, kept
        log = os.path.join(node.store, "jobs", job_id, kept[0], "dump-logs", "dump.log")
        with open(log) as f:
            assert "Error" in f.read()
        conn.close()
    finally:
        server.close()
