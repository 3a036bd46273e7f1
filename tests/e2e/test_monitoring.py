"""deploy/monitoring: the Prometheus alert rules pass `promtool check rules` and their unit
tests (`promtool test rules`), and the Grafana dashboard is well-formed: unique panel ids,
every target a PromQL expression that promtool parses, only arch_* metrics that exist (the
names are compared with a real scrape of archd in test_archd.py). Skips without promtool
(Debian package prometheus, installed by scripts/setup.sh)."""

import os
import shutil
import subprocess

import pytest

from archtest import monitoring


def promtool():
    path = shutil.which("promtool")
    if not path:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    return path


def run(*args, cwd=monitoring.MONITORING):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, cwd=cwd)


def test_alert_rules_check_and_their_unit_tests_pass():
    tool = promtool()
    r = run(tool, "check", "rules", monitoring.ALERTS)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    r = run(tool, "test", "rules", monitoring.ALERT_TESTS)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    names = [n for n, _ in monitoring.rule_exprs()]
    assert len(names) >= 5 and len(set(names)) == len(names), names


def test_alert_rule_unit_tests_can_fail(tmp_path):
    """The unit tests check what fires: a rule that never fires makes them fail."""
    tool = promtool()
    with open(monitoring.ALERTS) as f:
        broken = f.read().replace("increase(arch_checkpoints_skipped_total[15m]) > 0",
                                  "increase(arch_checkpoints_skipped_total[15m]) > 1000")
    (tmp_path / "arch-alerts.yml").write_text(broken)
    shutil.copy(monitoring.ALERT_TESTS, tmp_path / "arch-alerts.test.yml")
    r = run(tool, "test", "rules", "arch-alerts.test.yml", cwd=tmp_path)
    assert r.returncode != 0 and "ArchCheckpointsSkippedAtDeadline" in r.stdout + r.stderr


def test_dashboard_is_well_formed_and_its_queries_parse(tmp_path):
    d = monitoring.load_dashboard()
    assert d["title"] and d["uid"] and isinstance(d["schemaVersion"], int)
    ids = [p["id"] for p in monitoring.panels(d)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in monitoring.panels(d):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["targets"], f"panel {p['title']} has no query"
    exprs = monitoring.dashboard_exprs(d)
    assert len(exprs) >= 10
    used = set()
    for title, expr in exprs:
        names = monitoring.metric_names(expr)
        assert names, f"{title}: {expr} uses no arch_* metric"
        used |= names
    # Each expression as a recording rule: promtool parses the PromQL.
    tool = promtool()
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for i, (_, expr) in enumerate(exprs):
        rules += [f"      - record: dashboard:expr{i}", f"        expr: '{expr}'"]
    (tmp_path / "dashboard-rules.yml").write_text("\n".join(rules) + "\n")
    r = run(tool, "check", "rules", str(tmp_path / "dashboard-rules.yml"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    # The families every node exports are on the dashboard.
    for family in ("arch_checkpoints_total", "arch_checkpoints_skipped_total",
                   "arch_restores_total", "arch_newest_checkpoint_age_seconds",
                   "arch_notice_watcher_last_success_timestamp_seconds",
                   "arch_notice_watcher_consecutive_errors"):
        assert family in used, family
    # A query with a metric that archd does not export is caught by the scrape comparison
    # (test_archd.py); here, a name the helper must find:
    assert monitoring.metric_names('sum(rate(arch_nope_total{source="arch_x"}[5m]))') == \
        {"arch_nope_total"}
