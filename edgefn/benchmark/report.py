"""What a benchmark run shows: the terminal table, and one self-contained HTML page with the distributions drawn.

Both read the run's JSON document (run.run_bench), so `--json`, the table and the page always agree.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from .inprocess import SERIES

__all__ = ["SERIES_LABELS", "html_page", "table"]

SERIES_LABELS = {
    "cold_compile": "cold: compile", "cold_artifact": "cold: artifact", "warm_fresh": "warm: fresh instance", "warm_reused": "warm: reused instance",
}
_COLORS = {"cold_compile": "#c0392b", "cold_artifact": "#e67e22", "warm_fresh": "#2471a3", "warm_reused": "#229954"}
_C_COLORS = ("#2471a3", "#8e44ad", "#16a085", "#d35400", "#7f8c8d")


def _us(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if v >= 1_000_000:
        return f"{v / 1e6:.2f} s"
    if v >= 100_000:
        return f"{v / 1000:,.0f} ms"
    if v >= 10_000:
        return f"{v / 1000:.1f} ms"
    return f"{v:,.0f} µs"


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}×"


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def _cell(fn: dict[str, Any], key: str) -> str:
    s = fn["series"].get(key)
    if s is None:
        return "not measured" if key in fn["skipped"] else "–"
    m = s["summary"]
    return f"{_us(m['p50'])} / {_us(m['p99'])} ({m['n']})"


def table(doc: dict[str, Any]) -> str:
    """The run as aligned plain-text tables (what the terminal shows)."""
    out: list[str] = []
    m = doc["machine"]
    out.append(f"edgefn bench · {doc['app']} · edgefn {doc['edgefn']} · wasmtime {m.get('wasmtime')} · {m['cpus']} CPUs · load average {m['load_average'][0]:.2f}")
    fns = doc["functions"]
    if fns:
        out.append("\nIn process, one invocation: p50 / p99 (samples)")
        head = ["function", "trigger", *(SERIES_LABELS[k] for k in SERIES), "fuel p50", "peak memory"]
        rows = [head]
        for name, fn in fns.items():
            rows.append([name, fn["trigger"], *(_cell(fn, k) for k in SERIES), f"{fn['fuel'].get('p50', 0):,.0f}", f"{_mib(fn['peak_memory_bytes'])} of {fn['memory_mb']} MB"])
        out.extend(_aligned(rows))
        for name, fn in fns.items():
            for key, why in fn["skipped"].items():
                out.append(f"  {name}: {SERIES_LABELS[key]} not measured: {why}")
            if not fn["reuse_configured"] and "warm_reused" in fn["series"]:
                out.append(f"  {name}: serves a fresh instance per request; 'warm: reused' is what reuse_instances = true would give")
    http = doc.get("http")
    if http and http.get("runs"):
        gen = doc["load_generator"]
        out.append(
            f"\nOver HTTP: edgefn serve (workers {http['workers']}) started in {http['edgefn_start_to_healthy_s']:.2f} s, the baseline in "
            f"{http['baseline_start_to_healthy_s']:.2f} s; {http['duration_s']:g} s per run; load generator {gen}"
        )
        rows = [["path", "functions", "first request", "c", "req/s", "× baseline", "p50", "p99", "p99 × baseline", "server CPU/request", "× baseline", "not 2xx/3xx", "errors", "client CPU"]]
        runs = http["runs"]
        for c in http["concurrency"]:
            b = runs["baseline"][str(c)]
            rows.append(["baseline: Starlette hello", "", "", str(c), f"{b['rps']:,.0f}", "1.00×", _us(b["p50_us"]), _us(b["p99_us"]), "1.00×", _us(b["server_cpu_us_per_request"]), "1.00×", str(b["non_2xx"]), str(sum(b["errors"].values())), f"{b['client_cpu']:.2f}"])
            for t in http["targets"]:
                r = runs[t["path"]][str(c)]
                q = http["ratios"][t["path"]][str(c)]
                first = http["first_request"][t["path"]]
                rows.append([
                    t["path"], ", ".join(t["functions"]), f"{first['client_ms']:.1f} ms ({first['status']})", str(c), f"{r['rps']:,.0f}", _x(q["rps"]),
                    _us(r["p50_us"]), _us(r["p99_us"]), _x(q["p99"]), _us(r["server_cpu_us_per_request"]), _x(q["cpu_per_request"]), str(r["non_2xx"]), str(sum(r["errors"].values())), f"{r['client_cpu']:.2f}",
                ])
        out.extend(_aligned(rows))
        if any(runs["baseline"][str(c)]["client_cpu"] > 0.8 for c in http["concurrency"]):
            out.append("  the load generator used most of a core: the baseline's figures may be the client's limit (install wrk)")
        out.append("\nServer-Timing per stage, p50 (sequential requests)")
        for t in http["targets"]:
            st = http["stages"][t["path"]]
            stages = ", ".join(f"{k} {v['p50']:.3f} ms" for k, v in st["stages_ms"].items())
            out.append(f"  {t['path']}: {stages}; statuses {st['statuses']}; x-cache {st['x_cache']}")
    for name, why in doc.get("no_http", {}).items():
        out.append(f"  {name}: no HTTP figures: {why}")
    return "\n".join(out) + "\n"


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  " + "  ".join(cells).rstrip())
        if j == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


# --- the HTML page ------------------------------------------------------------------------------------------

_W, _PLOT_H, _L, _R, _T, _B = 560, 300, 64, 36, 28, 44
_LEGEND_ROW = 16


def _decade(d: int) -> str:
    """An axis label for 10**d µs: 1 µs, 10 µs, 100 µs, 1 ms, ... 1 s."""
    units = ((6, "s"), (3, "ms"), (0, "µs"))
    exp, unit = next((e, u) for e, u in units if d >= e or e == 0)
    return f"{10 ** (d - exp):g} {unit}" if d >= 0 else f"{10.0 ** d:g} µs"


def _cdf_svg(title: str, lines: list[tuple[str, str, dict[str, float], bool]], ident: str) -> str:
    """A latency distribution plot: x = latency (log scale), y = percentile; one line per (label, colour, ladder, dashed)."""
    values = [v for _, _, lad, _ in lines for v in lad.values() if v > 0]
    if not values:
        return ""
    lo, hi = math.log10(min(values)), math.log10(max(values))
    lo, hi = math.floor(lo), math.ceil(hi) if math.ceil(hi) > math.floor(lo) else math.floor(lo) + 1

    def px(v: float) -> float:
        return _L + (math.log10(max(v, 10**lo)) - lo) / (hi - lo) * (_W - _L - _R)

    def py(p: float) -> float:
        return _T + (1 - p / 100) * (_PLOT_H - _T - _B)

    height = _PLOT_H + _LEGEND_ROW * ((len(lines) + 1) // 2) + 4  # the legend goes below the axis, two entries a row
    parts = [f'<svg class="plot" id="{ident}" viewBox="0 0 {_W} {height}" width="{_W}" height="{height}" role="img" aria-label="{html.escape(title)}">']
    parts.append(f'<text x="{_W / 2}" y="16" text-anchor="middle" class="title">{html.escape(title)}</text>')
    for d in range(lo, hi + 1):
        x = px(10**d)
        parts.append(f'<line x1="{x:.1f}" y1="{_T}" x2="{x:.1f}" y2="{_PLOT_H - _B}" class="grid"/>')
        parts.append(f'<text x="{x:.1f}" y="{_PLOT_H - _B + 16}" text-anchor="middle">{_decade(d)}</text>')
    for p in (0, 50, 90, 99):
        y = py(p)
        parts.append(f'<line x1="{_L}" y1="{y:.1f}" x2="{_W - _R}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{_L - 6}" y="{y + 4:.1f}" text-anchor="end">p{p}</text>')
    parts.append(f'<text x="{_W / 2}" y="{_PLOT_H - 8}" text-anchor="middle">latency (log scale)</text>')
    for i, (label, colour, lad, dashed) in enumerate(lines):
        pts = sorted((float(p), v) for p, v in lad.items())
        dash = ' stroke-dasharray="5 4"' if dashed else ""
        if len({v for _, v in pts}) == 1:  # one sample: a point, not a line
            parts.append(f'<circle class="series" cx="{px(pts[0][1]):.1f}" cy="{py(50):.1f}" r="4" fill="{colour}"><title>{html.escape(label)}</title></circle>')
        else:
            path = " ".join(f"{px(v):.1f},{py(p):.1f}" for p, v in pts)
            parts.append(f'<polyline class="series" points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}><title>{html.escape(label)}</title></polyline>')
        lx, ly = _L + (i % 2) * 240, _PLOT_H + 2 + (i // 2) * _LEGEND_ROW
        parts.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 20}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{lx + 24}" y="{ly + 4}">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1180px; color: #1c2833; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; } h3 { font-size: 1.05em; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; margin: .6em 0; display: block; overflow-x: auto; max-width: 100%; } th, td { padding: 3px 9px; white-space: nowrap; border-bottom: 1px solid #d5d8dc; text-align: right; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; } figure { margin: 0; border: 1px solid #e5e7e9; padding: 4px; }
svg text { font-size: 11px; fill: #34495e; } svg text.title { font-size: 13px; font-weight: 600; }
svg line.grid { stroke: #eaecee; stroke-width: 1; } .note { color: #5d6d7e; }
"""

#: the page checks its own plots once laid out: each figure gets the size of the box all its lines are drawn in (a browser
#: test reads it; one series alone may be narrow where its samples are close together)
_CHECK = """
document.querySelectorAll("figure").forEach(function (f) {
  var x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  f.querySelectorAll(".series").forEach(function (s) {
    var b = s.getBBox(); x0 = Math.min(x0, b.x); y0 = Math.min(y0, b.y); x1 = Math.max(x1, b.x + b.width); y1 = Math.max(y1, b.y + b.height);
  });
  var w = x1 > x0 ? x1 - x0 : 0, h = y1 > y0 ? y1 - y0 : 0;
  f.setAttribute("data-drawn", Math.round(w) + "x" + Math.round(h));
});
document.body.setAttribute("data-plots", String(document.querySelectorAll("figure[data-drawn]").length));
"""


def _html_table(rows: list[list[str]]) -> str:
    head, *body = rows
    th = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def html_page(doc: dict[str, Any]) -> str:
    """One self-contained page (no external resource): the tables, and each distribution as an inline SVG plot."""
    m = doc["machine"]
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>edgefn bench · {html.escape(doc['app'])}</title><style>{_STYLE}</style></head><body>",
        f"<h1>edgefn bench · {html.escape(doc['app'])}</h1>",
        f"<p class=\"note\">edgefn {html.escape(doc['edgefn'])}, wasmtime {html.escape(str(m.get('wasmtime')))}, {m['cpus']} CPUs ({html.escape(m['cpu_model'])}), "
        f"load average {m['load_average'][0]:.2f} at start; {html.escape(doc['started'])}. Ratios are against the baseline measured in this run.</p>",
    ]
    fns = doc["functions"]
    if fns:
        parts.append("<h2>Cold vs warm, in process</h2>")
        rows = [["function", "trigger", *(SERIES_LABELS[k] + " p50 / p99 (n)" for k in SERIES), "fuel p50", "peak memory"]]
        for name, fn in fns.items():
            rows.append([name, fn["trigger"], *(_cell(fn, k) for k in SERIES), f"{fn['fuel'].get('p50', 0):,.0f}", f"{_mib(fn['peak_memory_bytes'])} of {fn['memory_mb']} MB"])
        parts.append(_html_table(rows))
        parts.append('<div class="plots">')
        for i, (name, fn) in enumerate(fns.items()):
            lines = [(SERIES_LABELS[k], _COLORS[k], fn["series"][k]["ladder"], False) for k in SERIES if k in fn["series"]]
            svg = _cdf_svg(f"{name} — cold vs warm", lines, f"fn-{i}")
            if svg:
                parts.append(f'<figure data-function="{html.escape(name)}">{svg}</figure>')
        parts.append("</div>")
    http = doc.get("http")
    if http and http.get("runs"):
        parts.append("<h2>Over HTTP, through edgefn serve</h2>")
        parts.append(
            f"<p class=\"note\">Started in {http['edgefn_start_to_healthy_s']:.2f} s (baseline {http['baseline_start_to_healthy_s']:.2f} s); "
            f"{http['duration_s']:g} s per run; load generator {html.escape(doc['load_generator'])}; workers {http['workers']}. "
            "Dashed lines: the baseline, a plain Starlette hello on Hypercorn with the same settings.</p>"
        )
        rows = [["path", "functions", "c", "req/s", "× baseline", "p50", "p99", "p99 × baseline", "server CPU/request", "× baseline", "not 2xx/3xx", "errors", "client CPU"]]
        for c in http["concurrency"]:
            b = http["runs"]["baseline"][str(c)]
            rows.append(["baseline", "Starlette hello", str(c), f"{b['rps']:,.0f}", "1.00×", _us(b["p50_us"]), _us(b["p99_us"]), "1.00×", _us(b["server_cpu_us_per_request"]), "1.00×", str(b["non_2xx"]), str(sum(b["errors"].values())), f"{b['client_cpu']:.2f}"])
            for t in http["targets"]:
                r, q = http["runs"][t["path"]][str(c)], http["ratios"][t["path"]][str(c)]
                rows.append([t["path"], ", ".join(t["functions"]), str(c), f"{r['rps']:,.0f}", _x(q["rps"]), _us(r["p50_us"]), _us(r["p99_us"]), _x(q["p99"]),
                             _us(r["server_cpu_us_per_request"]), _x(q["cpu_per_request"]), str(r["non_2xx"]), str(sum(r["errors"].values())), f"{r['client_cpu']:.2f}"])
        parts.append(_html_table(rows))
        rows = [["path", "first request", "stages (p50, sequential requests)"]]
        for t in http["targets"]:
            first = http["first_request"][t["path"]]
            st = http["stages"][t["path"]]["stages_ms"]
            rows.append([t["path"], f"{first['client_ms']:.1f} ms ({first['status']})", ", ".join(f"{k} {v['p50']:.3f} ms" for k, v in st.items())])
        parts.append(_html_table(rows))
        parts.append('<div class="plots">')
        for i, t in enumerate(http["targets"]):
            lines = []
            for j, c in enumerate(http["concurrency"]):
                colour = _C_COLORS[j % len(_C_COLORS)]
                lines.append((f"edgefn c={c}", colour, http["runs"][t["path"]][str(c)]["latency_us"], False))
                lines.append((f"baseline c={c}", colour, http["runs"]["baseline"][str(c)]["latency_us"], True))
            svg = _cdf_svg(f"{t['path']} ({', '.join(t['functions'])}) over HTTP", lines, f"http-{i}")
            if svg:
                parts.append(f'<figure data-path="{html.escape(t["path"])}">{svg}</figure>')
        parts.append("</div>")
    if doc.get("no_http"):
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}: no HTTP figures: {html.escape(w)}</li>" for n, w in doc["no_http"].items()) + "</ul>")
    data = json.dumps(doc).replace("</", "<\\/")  # a string in the data cannot end the script element
    parts.append(f'<script type="application/json" id="bench-data">{data}</script>')
    parts.append(f"<script>{_CHECK}</script></body></html>")
    return "".join(parts)
