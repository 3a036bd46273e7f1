"""deploy/monitoring's Grafana dashboard, evaluated and drawn without Grafana (which Debian
does not package): every panel's queries are run by a real Prometheus (archtest/prometheus)
over the time range given, and the panels are laid out by their gridPos in one HTML page
(stat: the value; table: one row per series; timeseries: an inline SVG line per series,
named by the target's legendFormat), which headless Chromium can photograph. The page has
no script and loads nothing from elsewhere."""

import html
import re

from archtest import monitoring

COLUMNS = 24
ROW_PX = 34
COLOURS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#f2495c", "#b877d9", "#8ab8ff",
           "#fade2a"]


def expr_of(target, rate_interval):
    expr = target["expr"]
    for var, value in {**monitoring._VARIABLES, "$__rate_interval": rate_interval}.items():
        expr = expr.replace(var, value)
    return expr


def legend(fmt, labels):
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") \
            or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def evaluate(prom, dashboard, start, end, step, rate_interval):
    """[(panel, [(legend, [(t, v)])])]: each panel's series, range queries for timeseries
    and instant queries (at `end`) for stats and tables. Values that are NaN are dropped."""
    out = []
    for p in monitoring.panels(dashboard):
        series = []
        for t in p.get("targets", []):
            expr = expr_of(t, rate_interval)
            if p["type"] == "timeseries":
                for r in prom.query_range(expr, start, end, step):
                    pts = [(float(ts), float(v)) for ts, v in r["values"] if v not in ("NaN",)]
                    if pts:
                        series.append((legend(t.get("legendFormat"), r["metric"]), pts))
            else:
                for r in prom.query(expr, at=end):
                    ts, v = r["value"]
                    if v != "NaN":
                        series.append((legend(t.get("legendFormat"), r["metric"]),
                                       [(float(ts), float(v))]))
        out.append((p, series))
    return out


def _number(v):
    if abs(v) >= 1e9:
        return f"{v / 1e9:.1f} G"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.1f} M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:.1f} k"
    return f"{v:.3g}"


def _svg(series, width, height, start, end):
    pad_l, pad_b, pad_t = 48, 18, 6
    w, h = width - pad_l - 8, height - pad_b - pad_t
    values = [v for _, pts in series for _, v in pts]
    lo, hi = min(values + [0.0]), max(values + [0.0])
    hi = hi if hi > lo else lo + 1
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" '
             'stroke="#444"/>']
    for frac in (0, 0.5, 1):
        y = pad_t + h - frac * h
        parts.append(f'<text x="{pad_l - 4}" y="{y + 4:.0f}" text-anchor="end" '
                     f'font-size="10" fill="#aaa">{_number(lo + frac * (hi - lo))}</text>')
        parts.append(f'<line x1="{pad_l}" y1="{y:.0f}" x2="{pad_l + w}" y2="{y:.0f}" '
                     'stroke="#2a2a2e"/>')
    span = max(end - start, 1)
    parts.append(f'<text x="{pad_l}" y="{height - 3}" font-size="10" fill="#aaa">'
                 f'-{span:.0f} s</text>')
    parts.append(f'<text x="{pad_l + w}" y="{height - 3}" font-size="10" fill="#aaa" '
                 'text-anchor="end">now</text>')
    for i, (_, pts) in enumerate(series):
        coords = " ".join(f"{pad_l + (t - start) / span * w:.1f},"
                          f"{pad_t + h - (v - lo) / (hi - lo) * h:.1f}" for t, v in pts)
        parts.append(f'<polyline points="{coords}" fill="none" stroke-width="2" '
                     f'stroke="{COLOURS[i % len(COLOURS)]}"/>')
    parts.append("</svg>")
    return "".join(parts)


def page(evaluated, title, width, start, end):
    """The HTML page of the evaluated dashboard, `width` pixels wide."""
    col = width / COLUMNS
    bottom = 0
    boxes = []
    for p, series in evaluated:
        g = p["gridPos"]
        x, y, w, h = g["x"] * col, g["y"] * ROW_PX, g["w"] * col, g["h"] * ROW_PX
        bottom = max(bottom, y + h)
        style = f"left:{x + 4:.0f}px;top:{y + 4:.0f}px;width:{w - 8:.0f}px;height:{h - 8:.0f}px"
        name = html.escape(p["title"])
        if p["type"] == "row":
            boxes.append(f'<div class="row" style="{style}">{name}</div>')
            continue
        if p["type"] == "stat":
            value = sum(pts[-1][1] for _, pts in series) if series else None
            body = f'<div class="stat">{_number(value) if value is not None else "No data"}</div>'
        elif p["type"] == "table":
            rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{_number(pts[-1][1])}</td></tr>"
                           for n, pts in series[:12])
            body = f"<table>{rows}</table>" if rows else '<div class="none">No data</div>'
        else:
            if series:
                body = _svg(series, int(w - 16), int(h - 8 - 22 - 18 * min(len(series), 3)),
                            start, end)
                body += '<div class="legend">' + " ".join(
                    f'<span style="color:{COLOURS[i % len(COLOURS)]}">&#9644;</span> '
                    f"{html.escape(n)}" for i, (n, _) in enumerate(series[:9])) + "</div>"
            else:
                body = '<div class="none">No data</div>'
        boxes.append(f'<div class="panel" style="{style}"><div class="title">{name}</div>'
                     f"{body}</div>")
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>"
            f"{html.escape(title)}</title><style>"
            "body{margin:0;background:#111217;color:#ccccdc;font:13px sans-serif}"
            f".grid{{position:relative;width:{width}px;height:{bottom + 8:.0f}px}}"
            ".panel{position:absolute;background:#181b1f;border:1px solid #2a2d33;"
            "border-radius:3px;padding:4px 8px;box-sizing:border-box;overflow:hidden}"
            ".row{position:absolute;font-size:15px;font-weight:bold;padding-top:6px}"
            ".title{font-weight:bold;margin-bottom:4px}"
            ".stat{font-size:40px;color:#73bf69;text-align:center;margin-top:18px}"
            ".none{color:#777;text-align:center;margin-top:30px}"
            "table{width:100%;border-collapse:collapse}td{border-bottom:1px solid #2a2d33;"
            "padding:2px 4px}.legend{font-size:11px}"
            f"</style></head><body><div class=\"grid\">{''.join(boxes)}</div></body></html>")
