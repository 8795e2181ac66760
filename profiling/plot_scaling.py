#!/usr/bin/env python3
"""Draws the `scaling` bench's curves as SVG files in docs/ (standard library
only: no matplotlib, no gnuplot), from criterion's saved estimates.

    cargo bench --bench scaling
    python3 profiling/plot_scaling.py [CRITERION_DIR] [OUT_DIR]

CRITERION_DIR defaults to $CARGO_TARGET_DIR/criterion or target/criterion;
OUT_DIR to docs/. Writes scaling-nodes.svg, scaling-subscribers.svg,
scaling-traces.svg and scaling-release.svg, and prints the table of the
figures drawn (ns per event, or per release), ready for docs/PERFORMANCE.md.

The figure per point is criterion's slope estimate when it has one (linear
sampling), else its mean, divided by the bench's throughput elements (events
per iteration), so every curve is in ns per event (per release for the
release curve).
"""

import json
import math
import os
import sys
from pathlib import Path


def load(crit_dir):
    """{(function_id, value_str): ns per element} for group `scaling`."""
    out = {}
    for bench in Path(crit_dir, "scaling").glob("**/new/benchmark.json"):
        b = json.loads(bench.read_text())
        est = json.loads(bench.with_name("estimates.json").read_text())
        point = (est.get("slope") or est["mean"])["point_estimate"]
        elems = 1
        thr = b.get("throughput") or {}
        if "Elements" in thr:
            elems = thr["Elements"] or 1
        out[(b["function_id"], b["value_str"])] = point / elems
    return out


def fmt_ns(v):
    if v >= 1e6:
        return f"{v / 1e6:.3g} ms"
    if v >= 1e3:
        return f"{v / 1e3:.3g} µs"
    return f"{v:.3g} ns"


def ticks_log(lo, hi):
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if a == b:
        b += 1
    return [10.0 ** k for k in range(a, b + 1)]


def svg_chart(path, title, xlabel, ylabel, series, logx=True, logy=True, categories=None):
    """series: [(name, [(x, y), ...])]; with `categories`, x are indices."""
    W, H, L, R, T, B = 640, 400, 80, 170, 40, 60
    pw, ph = W - L - R, H - T - B
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts]
    if not xs:
        return False
    if categories:
        fx = lambda x: L + pw * (x + 0.5) / len(categories)  # noqa: E731
        xt = [(i, c) for i, c in enumerate(categories)]
    else:
        xlo, xhi = (ticks_log(min(xs), max(xs))[0], ticks_log(min(xs), max(xs))[-1]) if logx else (0, max(xs) * 1.05)
        tx = (lambda v: math.log10(v)) if logx else (lambda v: v)
        fx = lambda x: L + pw * (tx(x) - tx(xlo)) / (tx(xhi) - tx(xlo))  # noqa: E731
        xt = [(v, f"{v:,.0f}") for v in ticks_log(min(xs), max(xs))] if logx else []
    if logy:
        yt_vals = ticks_log(min(ys), max(ys))
        ylo, yhi = yt_vals[0], yt_vals[-1]
        if len(yt_vals) <= 3:  # few decades: label 2x and 5x too
            yt_vals = sorted({v * m for v in yt_vals[:-1] for m in (1, 2, 5)} | {yhi})
        ty = math.log10
    else:
        ylo, yhi = 0.0, max(ys) * 1.1
        step = 10 ** math.floor(math.log10(yhi / 2)) if yhi > 0 else 1
        yt_vals = [i * step for i in range(int(yhi / step) + 1)]
        ty = lambda v: v  # noqa: E731
    fy = lambda y: T + ph - ph * (ty(y) - ty(ylo)) / (ty(yhi) - ty(ylo))  # noqa: E731
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{L + pw / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
         f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>']
    for v in yt_vals:
        y = fy(v)
        o.append(f'<line x1="{L}" x2="{L + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt_ns(v)}</text>')
    for v, label in xt:
        x = fx(v)
        o.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{T}" y2="{T + ph}" stroke="#eee"/>')
        o.append(f'<text x="{x:.1f}" y="{T + ph + 16}" text-anchor="middle">{label}</text>')
    o.append(f'<text x="{L + pw / 2}" y="{H - 15}" text-anchor="middle">{xlabel}</text>')
    o.append(f'<text transform="translate(18,{T + ph / 2}) rotate(-90)" text-anchor="middle">{ylabel}</text>')
    for i, (name, pts) in enumerate(series):
        c = colors[i % len(colors)]
        pts = sorted(pts)
        d = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y in pts)
        o.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y in pts:
            o.append(f'<circle cx="{fx(x):.1f}" cy="{fy(y):.1f}" r="3" fill="{c}"><title>{name}: {fmt_ns(y)}</title></circle>')
        ly = T + 14 + 18 * i
        o.append(f'<line x1="{L + pw + 12}" x2="{L + pw + 32}" y1="{ly - 4}" y2="{ly - 4}" stroke="{c}" stroke-width="2"/>')
        o.append(f'<text x="{L + pw + 36}" y="{ly}">{name}</text>')
    o.append("</svg>")
    Path(path).write_text("\n".join(o) + "\n")
    return True


def main():
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    crit = sys.argv[1] if len(sys.argv) > 1 else os.path.join(target, "criterion")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs")
    d = load(crit)
    if not d:
        sys.exit(f"no scaling estimates under {crit}/scaling: run `cargo bench --bench scaling` first")

    def curve(fid):
        return sorted((float(v), ns) for (f, v), ns in d.items() if f == fid)

    rows = []
    nodes = [(n, curve(f"event_vs_nodes/{n}")) for n in ("log", "add")]
    subs = [("one event, S subscribers", curve("event_vs_subscribers"))]
    cats = ["1x1", "2x1", "2x8", "2x64", "2x512"]
    traces = [("whole machine",
               [(i, d[("event_vs_traces", c)]) for i, c in enumerate(cats) if ("event_vs_traces", c) in d])]
    rel = [(k, curve(f"release_vs_nodes/{k}")) for k in ("call", "drained")]
    made = [
        svg_chart(out / "scaling-nodes.svg", "Cost per event vs trace size", "nodes in the trace", "per event", nodes),
        svg_chart(out / "scaling-subscribers.svg", "One event to S subscribers", "subscribers", "per emitted event",
                  subs),
        svg_chart(out / "scaling-traces.svg", "Cost per event vs concurrent traces", "threads x traces per thread",
                  "per event (wall / events)", traces, logy=False, categories=cats),
        svg_chart(out / "scaling-release.svg", "release() vs trace size", "nodes in the trace", "per release", rel),
    ]
    for name, pts in nodes:
        rows += [(f"event_vs_nodes/{name}", f"{x:,.0f}", y) for x, y in pts]
    rows += [("event_vs_subscribers", f"{x:,.0f}", y) for x, y in subs[0][1]]
    rows += [("event_vs_traces", cats[int(x)], y) for x, y in traces[0][1]]
    for name, pts in rel:
        rows += [(f"release_vs_nodes/{name}", f"{x:,.0f}", y) for x, y in pts]
    print("| curve | point | per event (per release) |")
    print("|---|---:|---:|")
    for c, p, y in rows:
        print(f"| {c} | {p} | {fmt_ns(y)} |")
    s = dict(subs[0][1])
    if 10.0 in s and 100.0 in s:
        print(f"\nper extra subscriber (10 -> 100): {(s[100.0] - s[10.0]) / 90:.1f} ns")
    if 100.0 in s and 1000.0 in s:
        print(f"per extra subscriber (100 -> 1,000): {(s[1000.0] - s[100.0]) / 900:.1f} ns")
    print(f"\nwrote {sum(made)} SVG files to {out}/")


if __name__ == "__main__":
    main()
