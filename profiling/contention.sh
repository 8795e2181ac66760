#!/bin/sh
# Create/release contention, 1 and 2 threads, workers(1): the `contention`
# criterion bench in RUNS fresh processes (default 5), printing the median
# of the runs' point estimates (criterion's `median` of each run) per row.
# Run it on each state of the engine (e.g. before and after a registry or
# free-list change) and put both tables side by side.
#
#   profiling/contention.sh
#   RUNS=5 BENCH_ARGS="--warm-up-time 1 --measurement-time 3" profiling/contention.sh
set -eu
RUNS="${RUNS:-5}"
BENCH_ARGS="${BENCH_ARGS:-}"
cd "$(dirname "$0")/.."
DIR="${CARGO_TARGET_DIR:-target}/criterion/contention"
OUT="$(mktemp)"
LOG="$(mktemp)"
trap 'rm -f "$OUT" "$LOG"' EXIT
cargo bench --bench contention --no-run >/dev/null 2>&1 || cargo bench --bench contention --no-run
r=1
while [ "$r" -le "$RUNS" ]; do
    echo "run $r/$RUNS" >&2
    # shellcheck disable=SC2086
    if ! cargo bench --bench contention -- --noplot $BENCH_ARGS >"$LOG" 2>&1; then
        cat "$LOG" >&2
        exit 1
    fi
    for t in 1 2; do
        printf '%s\t%s\n' "$t" "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"])' "$DIR/create_release/$t/new/estimates.json")" >> "$OUT"
    done
    r=$((r + 1))
done
python3 - "$OUT" "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    t, ns = line.split()
    rows.setdefault(t, []).append(float(ns))
print(f"commit {sys.argv[2]}, medians of {max(len(v) for v in rows.values())} runs\n")
print("| create + release, workers(1) | median | min–max | pairs/s (machine) |")
print("|---|---:|---:|---:|")
for t in sorted(rows):
    v = rows[t]
    m = statistics.median(v)
    print(f"| {t} thread{'s' if t != '1' else ''} | {m:.1f} ns | {min(v):.1f}–{max(v):.1f} ns | {1e9/m:,.0f} |")
PY
