"""deploy/monitoring as the tests read it: the Grafana dashboard's and the alert rules'
PromQL expressions, and the metric names they use."""

import json
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
MONITORING = os.path.join(REPO, "deploy", "monitoring")
DASHBOARD = os.path.join(MONITORING, "grafana-dashboard.json")
ALERTS = os.path.join(MONITORING, "arch-alerts.yml")
ALERT_TESTS = os.path.join(MONITORING, "arch-alerts.test.yml")

# Grafana's variables, replaced by what they become at query time.
_VARIABLES = {"$__rate_interval": "5m", "$instance": ".*", "${instance}": ".*"}


def load_dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def panels(dashboard):
    """Every panel, those inside collapsed rows too."""
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def dashboard_exprs(dashboard=None):
    """[(panel title, PromQL with Grafana's variables replaced)]."""
    out = []
    for p in panels(dashboard or load_dashboard()):
        for t in p.get("targets", []):
            expr = t["expr"]
            for var, value in _VARIABLES.items():
                expr = expr.replace(var, value)
            out.append((p["title"], expr))
    return out


def rule_exprs():
    """[(alert name, expr)] of the alert rules (a small reader of our own file's shape:
    `- alert: NAME` then `expr: ...`, one line or a folded block)."""
    out = []
    name, lines, collecting = None, [], False
    with open(ALERTS) as f:
        text = f.read().splitlines()
    for line in text:
        stripped = line.strip()
        if stripped.startswith("- alert:"):
            name = stripped.split(":", 1)[1].strip()
        elif stripped.startswith("expr:"):
            value = stripped.split(":", 1)[1].strip()
            if value in (">", "|", ">-", "|-"):
                collecting, lines = True, []
            else:
                out.append((name, value))
        elif collecting:
            if stripped and not re.match(r"^(for|labels|annotations):", stripped):
                lines.append(stripped)
            else:
                out.append((name, " ".join(lines)))
                collecting = False
    return out


# PromQL words that look like metric names but are functions, keywords or label names.
_NAME = re.compile(r"\barch_[a-z0-9_]+\b")


def metric_names(expr):
    """The arch_* metric names an expression selects (label values in quotes excluded)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return set(_NAME.findall(without_strings))


def exposed_names(metrics_text):
    """The sample names of an exposition (histograms give _bucket, _sum and _count)."""
    names = set()
    for line in metrics_text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, 1)[0])
    return names
