"""The checkpoint tests' workloads: the static `archtest` program, the image holding it,
and readers that check what each workload wrote.

`programs/archtest.c` is compiled with `cc -static -O2` once per session and put into a
busybox image as /bin/archtest, next to the files the rootfs workload changes. Every
workload writes to files under /data; the checks here are what a user of a checkpointed
job cares about: a counter that neither restarts, repeats nor skips; a pipe whose
sequence arrives complete and in order; memory that comes back bit for bit.

Each run of a workload starts its output with a line `start <uuid>` (a fresh uuid from
/proc/sys/kernel/random/uuid per process start), so a restored process (same uuid, no
second start line) is told apart from one that started again.
"""

import os
import re
import struct
import subprocess
import zlib

from . import image

PROGRAM_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs", "archtest.c")
IMAGE_NAME = "arch.test/workloads:1"
IN_IMAGE = "/bin/archtest"

# Files of the image that the rootfs workload (`archtest mutate`) deletes, replaces or changes.
MOTD = b"welcome to the ARCH test image\n"
APP_CONF = b"setting = 1\n"
IMAGE_FILES = (
    ("etc/motd", "file", MOTD, 0o644),
    ("etc/app.conf", "file", APP_CONF, 0o644),
    ("opt", "dir", b"", 0o755),
    ("opt/app", "dir", b"", 0o755),
    ("opt/app/a.txt", "file", b"old a\n", 0o644),
    ("opt/app/sub", "dir", b"", 0o755),
    ("opt/app/sub/b.txt", "file", b"old b\n", 0o644),
    ("data", "dir", b"", 0o755),
)

MEMORY_MAGIC = 0x41524348434B5054
MEMORY_STRIDE = 7919
PAGE = 4096


def compile_static(source, out_dir, name):
    """Compiles the C file `source` statically into out_dir/name; returns the binary's path."""
    out = os.path.join(out_dir, name)
    r = subprocess.run(["cc", "-static", "-O2", "-Wall", "-o", out, source],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise AssertionError(f"compiling {source} failed:\n{r.stderr}")
    return out


def compile_program(out_dir):
    """Compiles programs/archtest.c statically into out_dir; returns the binary's path."""
    return compile_static(PROGRAM_SOURCE, out_dir, "archtest")


def image_entries(program, extra=()):
    """Layer entries (see image.build_layer) of the workload image: archtest + IMAGE_FILES."""
    with open(program, "rb") as f:
        binary = f.read()
    return (("bin/archtest", "file", binary, 0o755),) + IMAGE_FILES + tuple(extra)


def build_image(out_dir, program, name=IMAGE_NAME, stem="workloads", extra=()):
    """Writes the workload image as OCI and docker archives; returns (oci, docker) paths."""
    return image.build_archives(out_dir, name, extra=image_entries(program, extra), stem=stem)


# ------------------------------------------------------------------ commands

def counter(path="/data/count.txt", ms=50):
    """One process, one file kept open, "N\\n" appended (fsync'd) every `ms` ms."""
    return [IN_IMAGE, "counter", path, str(ms)]


def shell_loop(path="/data/shell.txt", us=50000):
    """busybox sh reopening the file for every line."""
    script = (f"echo start $(cat /proc/sys/kernel/random/uuid) >> {path}; i=0; "
              f"while :; do i=$((i+1)); echo $i >> {path}; usleep {us}; done")
    return ["sh", "-c", script]


def pipeline(path="/data/pipe.txt", ms=20):
    """producer | consumer: the consumer appends "K N" for the K-th line N it receives."""
    return ["sh", "-c", f"{IN_IMAGE} produce {ms} | {IN_IMAGE} consume {path}"]


def memory(ticks="/data/ticks.txt", sums="/data/sums.txt", mib=64, ms=50):
    """`mib` MiB in a known pattern, mutated every tick; SIGUSR1 asks for a CRC32."""
    return [IN_IMAGE, "memory", ticks, sums, str(mib), str(ms)]


def mutate():
    return [IN_IMAGE, "mutate"]


def lister(root="/"):
    return [IN_IMAGE, "list", root]


# ------------------------------------------------------------------ readers and checks

def complete_lines(text):
    """The complete lines of `text` (a last line without newline is still being written)."""
    lines = text.split("\n")
    return lines[:-1]


def parse_counter(text):
    """(start uuid, [values]) from a counter file: `start <uuid>` then one integer a line.

    Further `start` lines (a process that started again) are kept in the values as the
    string "start <uuid>", so a check against 1..N fails on them."""
    lines = complete_lines(text)
    if not lines or not lines[0].startswith("start "):
        raise AssertionError(f"counter file does not begin with a start line: {text[:200]!r}")
    values = []
    for line in lines[1:]:
        values.append(int(line) if re.fullmatch(r"\d+", line) else line)
    return lines[0].split(" ", 1)[1], values


def check_sequence(values, what="counter"):
    """Asserts values == [1, 2, ..., N]; names the first place it breaks."""
    for i, v in enumerate(values):
        if v != i + 1:
            around = values[max(0, i - 3):i + 4]
            raise AssertionError(f"{what}: value #{i + 1} is {v!r}, expected {i + 1} "
                                 f"(no restart, repeat or gap allowed); around it: {around}")
    return len(values)


def parse_pipe(text):
    """(start uuid, [(k, n)]) from the consumer's file."""
    lines = complete_lines(text)
    if not lines or not lines[0].startswith("start "):
        raise AssertionError(f"pipe file does not begin with a start line: {text[:200]!r}")
    out = []
    for line in lines[1:]:
        k, n = line.split(" ", 1)
        out.append((int(k) if k.isdigit() else k, int(n) if n.isdigit() else n))
    return lines[0].split(" ", 1)[1], out


def check_pipe(pairs):
    """Every line the producer wrote arrived once, in order: pair k is (k, k)."""
    for i, (k, n) in enumerate(pairs):
        if (k, n) != (i + 1, i + 1):
            raise AssertionError(f"pipe: line #{i + 1} is {k} {n!r}, expected {i + 1} {i + 1}; "
                                 f"around it: {pairs[max(0, i - 3):i + 4]}")
    return len(pairs)


def parse_sums(text):
    """[(tick, crc)] from the memory workload's sums file."""
    out = []
    for line in complete_lines(text):
        tick, crc = line.split()
        out.append((int(tick), int(crc, 16)))
    return out


def expected_memory_crc(tick, mib=64):
    """CRC32 of the memory workload's buffer after `tick` ticks (see programs/archtest.c)."""
    pages = mib * 256
    last = {}
    for t in range(1, tick + 1):
        last[(t * MEMORY_STRIDE) % pages] = t
    crc = 0
    for p in range(pages):
        page = struct.pack("<QQ", p, MEMORY_MAGIC) * (PAGE // 16)
        if p in last:
            page = struct.pack("<Q", last[p]) + page[8:]
        crc = zlib.crc32(page, crc)
    return crc


def parse_listing(text):
    """{path: line} from `archtest list` output (one entry a line, path first)."""
    out = {}
    for line in text.splitlines():
        path = line.split("\t", 1)[0]
        out[path] = line
    return out


def listing_field(line, name):
    """A `name=value` field of one listing line (None when absent)."""
    for field in line.split("\t"):
        if field.startswith(name + "="):
            return field[len(name) + 1:]
    return None


def listing_diff(before, after):
    """Human-readable differences between two listings ({} when equal)."""
    diff = {}
    for path in sorted(set(before) | set(after)):
        if before.get(path) != after.get(path):
            diff[path] = {"before": before.get(path), "after": after.get(path)}
    return diff
