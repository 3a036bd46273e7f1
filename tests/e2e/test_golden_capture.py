"""The runtime command lines containerd and dockerd issue match tests/golden/*.txt.

containerd (through ctr --runc-binary) and dockerd (a `capture` runtime in
daemon.json) run a fixed scenario against a logging wrapper runtime that records
each argv and execs runc.  The distinct normalised shapes must equal the golden
files, which arch-runc's C++ argv parser tests read.  Regenerate them with
tests/golden/capture.py after a deliberate change.
"""

import re

import pytest

from archtest import capture

REGENERATE = "regenerate with tests/golden/capture.py if the change is expected"


def diff(golden, got):
    return ("\nmissing from capture:\n  " + "\n  ".join(sorted(set(golden) - set(got))) +
            "\nnew in capture:\n  " + "\n  ".join(sorted(set(got) - set(golden))))


@pytest.mark.parametrize("path", [capture.GOLDEN_CONTAINERD, capture.GOLDEN_DOCKERD])
def test_golden_files_are_well_formed(path):
    with open(path) as f:
        text = f.read()
    lines = text.splitlines()
    assert lines, f"{path} is empty"
    assert text.endswith("\n") and "\r" not in text
    assert lines == sorted(set(lines)), "lines must be sorted and unique"
    for line in lines:
        assert line == line.strip() and "  " not in line, repr(line)
        assert re.search(r" (create|start|exec|kill|delete|pause|resume|ps|update|state) ",
                         f" {line} "), line
        for arg in line.split(" "):
            assert not arg.startswith("/"), f"un-normalised path in {line!r}"
            assert "/tmp/" not in arg and "/run/" not in arg, f"un-normalised path in {line!r}"
        assert line.split(" ")[-1] == "<id>" or line.split(" ")[-2] == "<id>", line


def test_containerd_shim_command_lines(containerd_env, capture_wrappers):
    wrapper = capture_wrappers["containerd"]
    open(wrapper.log, "w").close()
    capture.drive_containerd(containerd_env.ctd, containerd_env.ns, containerd_env.image,
                             wrapper.path, containerd_env.runc_root)
    got = capture.shapes(wrapper.log)
    golden = capture.read_golden(capture.GOLDEN_CONTAINERD)
    assert got == golden, f"containerd-shim-runc-v2 command lines changed; {REGENERATE}" + \
        diff(golden, got)


def test_dockerd_command_lines(docker_env, capture_wrappers):
    wrapper = capture_wrappers["dockerd"]
    open(wrapper.log, "w").close()
    capture.drive_dockerd(docker_env.dockerd, docker_env.image, "capture")
    got = capture.shapes(wrapper.log)
    golden = capture.read_golden(capture.GOLDEN_DOCKERD)
    assert got == golden, f"dockerd's runtime command lines changed; {REGENERATE}" + \
        diff(golden, got)
