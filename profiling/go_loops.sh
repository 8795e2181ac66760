#!/bin/sh
# The Go original's benchmark loops on tracepool (memory driver), on the
# Go-shaped baseline and on a do-nothing engine (the harness's own cost),
# each in ROUNDS fresh processes, engines alternating within a round; prints
# the medians and the ratios to the Go figures
# listed in docs/PERFORMANCE.md (taken as given).
#
#   profiling/go_loops.sh                 # 5 rounds, 1 s per loop
#   ROUNDS=5 SECS=1 ENGINES="tracepool go_baseline baseline_blocking harness" profiling/go_loops.sh
#
# Targets (issue 9): Go / tracepool >= 50x for simple, concurrent simple,
# subscription and space operations, >= 20x for the two complex loops; the
# Go-shaped baseline within 0.8-1.25x of each Go figure ("calibrated").
# Raw lines are kept in $OUT (default: target/go_loops.tsv).
set -eu
ROUNDS="${ROUNDS:-5}"
SECS="${SECS:-1}"
ENGINES="${ENGINES:-tracepool go_baseline harness}"
cd "$(dirname "$0")/.."
# shellcheck disable=SC2086
cargo build --release --example go_loops ${CARGO_FLAGS:-} >/dev/null 2>&1 || \
    cargo build --release --example go_loops ${CARGO_FLAGS:-}
BIN="${CARGO_TARGET_DIR:-target}/release/examples/go_loops"
case "$BIN" in /*) ;; *) BIN="$(pwd)/$BIN" ;; esac
OUT="${OUT:-${CARGO_TARGET_DIR:-target}/go_loops.tsv}"
: > "$OUT"
r=1
while [ "$r" -le "$ROUNDS" ]; do
    for e in $ENGINES; do
        echo "round $r/$ROUNDS: $e" >&2
        "$BIN" --engine "$e" --secs "$SECS" --tsv | sed "s/^/$r\t/" >> "$OUT"
    done
    r=$((r + 1))
done
python3 - "$OUT" <<'PY'
import statistics, sys
GO = {  # ns per loop, the Go figures of docs/PERFORMANCE.md (Store driver on an in-memory map)
    "simple": 24500, "complex": 267000, "concurrent_simple": 20700,
    "concurrent_complex": 168000, "subscription": 47100, "space_operations": 324000,
}
TARGET = {"complex": 20, "concurrent_complex": 20}
runs = {}
for line in open(sys.argv[1]):
    rnd, engine, loop, ns, n = line.rstrip("\n").split("\t")
    runs.setdefault((engine, loop), []).append(float(ns))
def med(e, l):
    v = runs.get((e, l))
    return statistics.median(v) if v else None
def us(x):
    return "—" if x is None else (f"{x/1e3:.2f} µs" if x < 1e5 else f"{x/1e3:.0f} µs")
def spread(e, l):
    v = runs.get((e, l))
    return "" if not v else f" ({min(v)/1e3:.2f}–{max(v)/1e3:.2f})"
engines = sorted({e for e, _ in runs})
n = max((len(v) for v in runs.values()), default=0)
print(f"medians of {n} fresh processes per engine (min–max in µs)\n")
print("| loop | Go | tracepool | Go / tracepool | target | harness | tracepool − harness | Go / (tracepool − harness) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for l, g in GO.items():
    t, h = med("tracepool", l), med("harness", l)
    ratio = f"**{g/t:.1f}x**" if t else "—"
    net = (t - h) if (t is not None and h is not None) else None
    print(f"| {l} | {us(g)} | {us(t)}{spread('tracepool', l)} | {ratio} | ≥ {TARGET.get(l, 50)}x | {us(h)} | {us(net)} | {f'{g/net:.1f}x' if net and net > 0 else '—'} |")
for other in [e for e in engines if e not in ("tracepool", "harness")]:
    print(f"\n{other} (calibration: {other} / Go within 0.8–1.25x = calibrated)\n")
    print(f"| loop | Go | {other} | {other} / Go | calibrated? | {other} / tracepool |")
    print("|---|---:|---:|---:|---|---:|")
    for l, g in GO.items():
        b, t = med(other, l), med("tracepool", l)
        if b is None:
            continue
        c = b / g
        ok = "yes" if 0.8 <= c <= 1.25 else "**uncalibrated**"
        print(f"| {l} | {us(g)} | {us(b)}{spread(other, l)} | {c:.2f}x | {ok} | {f'{b/t:.1f}x' if t else '—'} |")
PY
