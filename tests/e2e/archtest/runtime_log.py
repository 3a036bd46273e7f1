"""Reading what arch-runc logged: the bundles' log.json files and the node log file.

containerd-shim-runc-v2 gives every runtime call `--log <bundle>/log.json
--log-format json`, and arch-runc writes its per-call debug line there:
    {"level":"debug","msg":"arch-runc: <subcommand> <id>: pass-through to <runc>","time":"..."}
The bundle (and its log.json) is removed when the task is deleted, i.e. right after
the last runtime calls we want to see.  `BundleLogTap` therefore watches a
namespace's task directory and hard-links each log.json elsewhere as soon as it
appears; the link keeps the inode, so later appends (start, kill, delete ...) stay
readable after the bundle is gone.  A bundle re-created for the same id (docker
restart) has a new inode and is linked as a further generation.
"""

import json
import os
import re
import threading

from . import proc

ARCH_LINE = re.compile(r"^arch-runc: (?P<sub>\S+) (?P<id>\S*): pass-through to (?P<runc>\S+)$")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


class BundleLogTap:
    """Keeps every log.json created under `task_dir/<id>/` readable after the bundle is gone."""

    def __init__(self, task_dir, keep_dir, interval=0.002):
        self.task_dir = task_dir
        self.keep_dir = keep_dir
        self.interval = interval
        self._linked = {}  # id -> [(dev, ino), ...] in creation order
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()
        os.makedirs(keep_dir, exist_ok=True)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        self._scan()

    def _run(self):
        while not self._stop.wait(self.interval):
            self._scan()

    def _scan(self):
        try:
            names = os.listdir(self.task_dir)
        except FileNotFoundError:
            return
        for cid in names:
            src = os.path.join(self.task_dir, cid, "log.json")
            try:
                st = os.stat(src)
            except OSError:
                continue
            with self._lock:
                generations = self._linked.setdefault(cid, [])
                key = (st.st_dev, st.st_ino)
                if key in generations:
                    continue
                dst = os.path.join(self.keep_dir, f"{cid}.{len(generations)}.log.json")
                try:
                    os.link(src, dst)
                except OSError:
                    continue  # vanished between stat and link; a later scan may catch a new one
                generations.append(key)

    def ids(self):
        with self._lock:
            return sorted(self._linked)

    def has(self, cid):
        self._scan()
        with self._lock:
            return bool(self._linked.get(cid))

    def records(self, cid):
        """Every line written to cid's log.json (all generations), parsed as JSON."""
        with self._lock:
            count = len(self._linked.get(cid, []))
        out = []
        for n in range(count):
            with open(os.path.join(self.keep_dir, f"{cid}.{n}.log.json")) as f:
                out.extend(parse_json_lines(f.read()))
        return out

    def wait_linked(self, cid, timeout=10):
        proc.wait_until(lambda: self.has(cid), timeout, f"log.json of {cid}")


def parse_json_lines(text):
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"unparsable": line})
    return out


def arch_calls(records):
    """(subcommand, id, runc) of each arch-runc pass-through line among log records."""
    calls = []
    for r in records:
        m = ARCH_LINE.match(str(r.get("msg", "")))
        if m:
            calls.append((m["sub"], m["id"], m["runc"]))
    return calls


def check_pass_through_records(records, cid, runc):
    """Asserts the shape of arch-runc's lines; returns the subcommands in call order."""
    subs = []
    for r in records:
        msg = str(r.get("msg", ""))
        if not msg.startswith("arch-runc:"):
            continue
        assert set(r) >= {"level", "msg", "time"}, f"runc json log line lacks fields: {r}"
        assert RFC3339.match(str(r["time"])), f"time is not RFC 3339: {r}"
        if "ARCH-enabled container" in msg:
            continue
        m = ARCH_LINE.match(msg)
        assert m, f"unexpected arch-runc line: {r}"
        assert r["level"] == "debug", r
        assert m["id"] == cid, f"line names {m['id']}, expected {cid}: {r}"
        assert m["runc"] == runc, r
        subs.append(m["sub"])
    return subs


def enabled_lines(records, cid):
    return [r for r in records
            if f"ARCH-enabled container {cid}" in str(r.get("msg", ""))]
