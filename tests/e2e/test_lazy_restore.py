"""Lazy restore (CRIU lazy pages through userfaultfd) under containerd with arch-runc.

A container is checkpointed as usual, then run again with ARCH_LAZY_RESTORE=1: arch-runc
starts a `criu lazy-pages` daemon and restores with `runc restore --lazy-pages`, so the
processes run before their memory is read and pages come from the checkpoint on first
touch. What a user cares about: the job continues where it was (same process, no repeated
or missing tick) with its memory bit for bit, and the daemon is gone once it is no longer
needed (all pages served, or the container killed before that). No timing here: the
speed is measured by bench/restore_latency.py.
"""

import json
import os

from archtest import checkpoint, daemons, proc, workloads
from test_checkpoint_containerd import check_counter_resumed, request_sum
from test_checkpoint_failures import assert_moved_aside

LAZY = "ARCH_LAZY_RESTORE=1"


def lazy_daemons(work):
    """Pids of `criu lazy-pages` processes working in `work` (a restore's lazy work dir)."""
    return daemons.pids_with_args("lazy-pages", work)


def checkpoint_then_run_lazily(c, cid, argv):
    out = c.checkpoint(cid)
    assert c.delete(cid) == 137, "a checkpointed container ends with SIGKILL's status 137"
    c.run(cid, argv, env=(LAZY,))
    c.assert_restored(cid, out["checkpoint"])
    work = os.path.join(c.bundle(cid), "arch-restore")
    # The lazy attempt ran and was not followed by a plain one (which works in `work`).
    assert os.path.exists(os.path.join(work, "lazy", "restore.log")), c.diagnostics(cid)
    assert not os.path.exists(os.path.join(work, "restore.log")), (
        "the lazy restore fell back to a plain one\n" + c.diagnostics(cid))
    return out["checkpoint"], os.path.join(work, "lazy")


def test_lazy_restore_keeps_memory_intact_and_the_daemon_ends(ctr_containers):
    c, cid = ctr_containers, checkpoint.new_id("lazy")
    mib = 128
    argv = workloads.memory("/data/ticks.txt", "/data/sums.txt", mib=mib)
    c.run(cid, argv)
    c.wait_lines(cid, "/data/ticks.txt", 3, workloads.parse_counter)
    tick, crc = request_sum(c, cid, 0)
    assert crc == workloads.expected_memory_crc(tick, mib), "the harness's checksum model is wrong"

    ckpt, lazy_work = checkpoint_then_run_lazily(c, cid, argv)
    n = check_counter_resumed(c, cid, "/data/ticks.txt", ckpt, progress=3)
    tick2, crc2 = request_sum(c, cid, n)
    assert tick2 > n
    assert crc2 == workloads.expected_memory_crc(tick2, mib), (
        f"memory after the lazy restore does not match the pattern at tick {tick2}")
    # Every page is in place now (the checksum read them all): the daemon has no purpose left.
    proc.wait_until(lambda: not lazy_daemons(lazy_work), 60,
                    "the lazy-pages daemon to end after serving every page")
    # And the job goes on afterwards, still the same process without a gap.
    _, values = c.wait_lines(cid, "/data/ticks.txt", tick2 + 3, workloads.parse_counter)
    workloads.check_sequence(values, "/data/ticks.txt after the lazy-pages daemon ended")


def test_lazy_daemon_ends_with_a_container_killed_early(ctr_containers):
    c, cid = ctr_containers, checkpoint.new_id("lazykill")
    argv = workloads.memory("/data/ticks.txt", "/data/sums.txt", mib=256, ms=1000)
    c.run(cid, argv)
    c.wait_lines(cid, "/data/ticks.txt", 1, workloads.parse_counter)
    _, lazy_work = checkpoint_then_run_lazily(c, cid, argv)
    # Killed at once: usually while the daemon still copies pages (it may have finished on
    # a fast machine; either way none may be left behind).
    c.signal(cid, "SIGKILL")
    c.wait_status(cid, "STOPPED")
    proc.wait_until(lambda: not lazy_daemons(lazy_work), 60,
                    "the lazy-pages daemon to end with its container")


def test_checkpoint_while_pages_are_still_served_keeps_memory(ctr_containers):
    """A lazily restored container checkpointed again at once (its daemon still copying
    pages) must come back from that second checkpoint with its memory bit for bit: CRIU
    saves only the pages present, so the checkpoint has to wait for the daemon."""
    c, cid = ctr_containers, checkpoint.new_id("lazyagain")
    mib = 512
    argv = workloads.memory("/data/ticks.txt", "/data/sums.txt", mib=mib, ms=200)
    c.run(cid, argv)
    c.wait_lines(cid, "/data/ticks.txt", 1, workloads.parse_counter)
    _, lazy_work = checkpoint_then_run_lazily(c, cid, argv)
    serving = bool(lazy_daemons(lazy_work))
    out = c.checkpoint(cid)
    assert c.delete(cid) == 137
    c.run(cid, argv)
    c.assert_restored(cid, out["checkpoint"])
    n = check_counter_resumed(c, cid, "/data/ticks.txt", out["checkpoint"], progress=2)
    tick, crc = request_sum(c, cid, n)
    assert crc == workloads.expected_memory_crc(tick, mib), (
        f"memory lost by a checkpoint taken while lazy pages were still being served "
        f"(daemon serving at checkpoint start: {serving})")


# ---------------------------------------------------------------- ARCH's page server
# A checkpoint sealed with per-chunk digests of its pages images is restored lazily through
# ARCH's page server: every other image is hashed before `runc restore`, each pages chunk
# when it is first served (criu/lazy_page_server.h).

def page_server_log(lazy_work):
    try:
        with open(os.path.join(lazy_work, "page-server.log")) as f:
            return f.read()
    except OSError:
        return ""


def restore_tampered(c, cid, argv, ckpt, target, why, env=()):
    """Flips the middle byte of `target` (a pages image of checkpoint `ckpt`, sealed before)
    and re-creates `cid` from it: the page server must refuse the chunk when it first reads
    it (the background copy or the workload's next touch), saying `why`, and kill the
    container; the checkpoint is moved aside (kept for investigation), so the next start of
    the container does not meet it again. Returns the lazy work directory."""
    size = os.path.getsize(target)
    with open(target, "r+b") as f:
        f.seek(size // 2)
        b = f.read(1)
        f.seek(size // 2)
        f.write(bytes([b[0] ^ 0x55]))
    c.run(cid, argv, env=env, check=False)
    lazy_work = os.path.join(c.bundle(cid) or "", "arch-restore", "lazy")
    try:
        log = proc.wait_until(
            lambda: "nothing more was served" in page_server_log(lazy_work) and
            page_server_log(lazy_work), 120, "the page server to refuse the tampered chunk")
    except proc.WaitTimeout as e:
        raise AssertionError(f"{e}\n{page_server_log(lazy_work)}\n{c.diagnostics(cid)}")
    assert why in log, log
    assert "the container was killed" in log, log
    # Either way the checkpoint goes aside: killed after arch-runc let the restored
    # container go, the page server moves it (the container stops); killed while arch-runc
    # still checked it (a small checkpoint's background copy can get there first), that
    # restore failed and arch-runc moves it (the container follows the node's on_failure:
    # here, started fresh). Nothing ran on the bad chunk.
    proc.wait_until(lambda: not os.path.isdir(ckpt), 60, "the checkpoint to be moved aside")
    proc.wait_until(lambda: not lazy_daemons(lazy_work), 60,
                    "the lazy-pages daemon to end with the killed container")
    stopped = c.status(cid) == "STOPPED"
    print(f"\n{cid}: refused " + ("after arch-runc let the container go" if stopped
                                else "while arch-runc still checked the restore"))
    if stopped:
        assert c.delete(cid) == 137
        assert why in assert_moved_aside(c, cid)
        # The orchestrator starts it again: no crash loop on the same chunk, a fresh start.
        c.run(cid, argv, env=env)
        _, values = c.wait_lines(cid, "/data/ticks.txt", 2, workloads.parse_counter)
        assert values[0] == 1, f"restarted from {values[0]}, not fresh"
    else:
        assert_moved_aside(c, cid, "refused after restore")
    c.remove(cid)
    return lazy_work


def pages_images(d):
    """The pages images in images directory `d`, smallest first."""
    return sorted((os.path.join(d, n) for n in os.listdir(d)
                   if n.startswith("pages-") and n.endswith(".img")),
                  key=os.path.getsize)


def test_lazy_restore_through_the_page_server_keeps_memory_bit_for_bit(ctr_containers):
    c, cid = ctr_containers, checkpoint.new_id("lazysrv")
    mib = 256
    argv = workloads.memory("/data/ticks.txt", "/data/sums.txt", mib=mib)
    c.run(cid, argv)
    c.wait_lines(cid, "/data/ticks.txt", 3, workloads.parse_counter)
    ckpt, lazy_work = checkpoint_then_run_lazily(c, cid, argv)
    with open(os.path.join(ckpt, "manifest.json")) as f:
        manifest = json.load(f)
    assert any(p.startswith("images/pages-") for p in manifest.get("chunks", {})), (
        "the sealed manifest has no chunk digests of the pages images")
    # Through ARCH's page server: a private images directory (the pages there are sparse).
    private = os.path.join(lazy_work, "images")
    assert os.path.isdir(private), c.diagnostics(cid)
    big = pages_images(private)[-1]
    assert os.stat(big).st_blocks * 512 < os.path.getsize(big) // 2, (
        "the private pages image holds the lazy pages: they were not left to the server")
    n = check_counter_resumed(c, cid, "/data/ticks.txt", ckpt, progress=3)
    tick, crc = request_sum(c, cid, n)
    assert tick > n
    assert crc == workloads.expected_memory_crc(tick, mib), (
        f"memory after the lazy restore through ARCH's page server differs at tick {tick}")
    proc.wait_until(lambda: not lazy_daemons(lazy_work), 60,
                    "the lazy-pages daemon to end after serving every page")
    log = proc.wait_until(lambda: page_server_log(lazy_work), 60,
                          "the page server to end and log its outcome")
    assert "pages served" in log and "refused" not in log, log
    _, values = c.wait_lines(cid, "/data/ticks.txt", tick + 3, workloads.parse_counter)
    workloads.check_sequence(values, "/data/ticks.txt after the page server ended")


def test_a_flipped_byte_in_the_pages_is_never_served(ctr_containers):
    """Attack: a byte of pages-*.img changed in the store after the checkpoint, the seal
    left as it was. The restore itself succeeds (only the other images are hashed before
    it); the page server refuses the chunk when it first reads it, kills the container and
    logs why; the container never runs on with that memory; the checkpoint is moved aside."""
    c, cid = ctr_containers, checkpoint.new_id("lazybad")
    mib = 64
    argv = workloads.memory("/data/ticks.txt", "/data/sums.txt", mib=mib, ms=200)
    c.run(cid, argv)
    c.wait_lines(cid, "/data/ticks.txt", 2, workloads.parse_counter)
    out = c.checkpoint(cid)
    assert c.delete(cid) == 137
    ckpt = out["checkpoint"]
    target = pages_images(os.path.join(ckpt, "images"))[-1]  # the workload's buffer: private anonymous, lazy
    restore_tampered(c, cid, argv, ckpt, target, "does not match its sealed digest", env=(LAZY,))


def test_lazy_verify_first_hashes_the_pages_before_the_restore(ctr_containers):
    """ARCH_LAZY_VERIFY=first: the lazy restore of before per-chunk verification (every
    image hashed first, the daemon reading the store's pages itself), memory intact."""
    c, cid = ctr_containers, checkpoint.new_id("lazyfirst")
    mib = 64
    argv = workloads.memory("/data/ticks.txt", "/data/sums.txt", mib=mib)
    c.run(cid, argv)
    c.wait_lines(cid, "/data/ticks.txt", 3, workloads.parse_counter)
    out = c.checkpoint(cid)
    assert c.delete(cid) == 137
    c.run(cid, argv, env=(LAZY, "ARCH_LAZY_VERIFY=first"))
    c.assert_restored(cid, out["checkpoint"])
    lazy_work = os.path.join(c.bundle(cid), "arch-restore", "lazy")
    assert os.path.exists(os.path.join(lazy_work, "restore.log")), c.diagnostics(cid)
    assert not os.path.exists(os.path.join(lazy_work, "images")), "went through the page server"
    n = check_counter_resumed(c, cid, "/data/ticks.txt", out["checkpoint"], progress=3)
    tick, crc = request_sum(c, cid, n)
    assert crc == workloads.expected_memory_crc(tick, mib)
