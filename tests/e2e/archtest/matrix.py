"""Runs one scenario under plain runc and under arch-runc and compares the outcomes.

A scenario is a function `scenario(runtime) -> (outcome, ids)`: `outcome` is a dict
of everything observable with ids and timestamps normalised away, `ids` maps a label
to each container id the scenario created.  `compare_runtimes` checks, in order:
  1. the runc outcome equals the expected values (so a broken harness fails);
  2. runc's bundles got no arch-runc lines (the baseline really is plain runc);
  3. the arch-runc outcome equals the runc outcome;
  4. each arch-runc container's log.json holds one well-formed debug line per
     runtime call, naming that container, and the calls are the expected ones.
When arch-runc is not built, the test is skipped after step 2.
"""

import dataclasses
import os
import secrets
from typing import Optional

import pytest

from . import runtime_log


@dataclasses.dataclass(frozen=True)
class Runtime:
    name: str                      # "runc" or "arch-runc"
    binary: Optional[str]          # ctr --runc-binary; None: containerd's default (runc on PATH)
    docker_runtime: Optional[str]  # docker --runtime; None: dockerd's default runtime (runc)

    @property
    def is_arch(self):
        return self.name == "arch-runc"

    @property
    def short(self):
        return "arch" if self.is_arch else "runc"

    def ctr_args(self, runc_root):
        args = ["--runc-root", runc_root]
        if self.binary:
            args += ["--runc-binary", self.binary]
        return args

    def docker_args(self):
        return ["--runtime", self.docker_runtime] if self.docker_runtime else []


def new_id(label, runtime):
    return f"e2e-{label}-{runtime.short}-{secrets.token_hex(3)}"


@dataclasses.dataclass
class Run:
    outcome: dict
    ids: dict
    records: dict  # label -> log.json records


def run_with_tap(scenario, runtime, tap_factory):
    with tap_factory() as tap:
        outcome, ids = scenario(runtime)
    for label, cid in ids.items():
        assert tap.has(cid), (f"{runtime.name}: no log.json was seen for {label} ({cid}); "
                              f"seen: {tap.ids()}")
    return Run(outcome, ids, {label: tap.records(cid) for label, cid in ids.items()})


def compare_runtimes(scenario, tap_factory, runc, arch, expected, expected_calls,
                     runc_path, enabled_labels=()):
    """See the module docstring.  expected_calls: label -> list of runc subcommands."""
    base = run_with_tap(scenario, runc, tap_factory)
    assert base.outcome == expected, "runc outcome differs from the expected values"
    for label, records in base.records.items():
        assert runtime_log.arch_calls(records) == [], f"runc run of {label} went through arch-runc"
    if arch is None:
        pytest.skip("arch-runc is not built (runc baseline passed); "
                    "build it with `cmake --build build` or set ARCH_BUILD_DIR")
    got = run_with_tap(scenario, arch, tap_factory)
    assert got.outcome == base.outcome, "arch-runc outcome differs from runc's"
    for label, cid in got.ids.items():
        records = got.records[label]
        subs = runtime_log.check_pass_through_records(records, cid, runc_path)
        assert subs == expected_calls[label], (
            f"{label}: arch-runc logged calls {subs}, expected {expected_calls[label]}; "
            f"log.json: {records}")
        enabled = runtime_log.enabled_lines(records, cid)
        if label in enabled_labels:
            assert len(enabled) == 1, f"expected one ARCH-enabled line for {cid}: {records}"
            assert enabled[0]["level"] == "info", enabled[0]
        else:
            assert enabled == [], f"{label} is not ARCH-enabled but was logged so: {enabled}"
    return base, got


def read_int(path):
    """An integer written by the container, or None while it is being replaced."""
    try:
        with open(path) as f:
            text = f.read().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def keep_dir_for(base):
    path = os.path.join(base, "kept-logs", secrets.token_hex(4))
    os.makedirs(path)
    return path
