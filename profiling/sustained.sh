#!/bin/sh
# The highest rate a driver sustains: bisects the main job's open-loop mode
# (`tracepool run --rate R --duration S`) between a rate it sustains and one
# it does not, and prints a table of the runs and the result per driver.
#
#   profiling/sustained.sh --driver store|local|memory [--driver ...]
#                          [--dir D] [--duration 30] [--runs 8]
#                          [--lo N] [--hi N] [--keep-every 1]
#                          [--concurrency N] [--probe-traces 20000]
#
#   profiling/sustained.sh --driver memory --duration 5 --runs 3
#   profiling/sustained.sh --driver local,store --dir /mnt/fast
#
# A run is sustained when tracepool says `sustained=yes` on its last line
# (`rate_result ...`): at least 99% of the offered rate achieved, no event
# dropped, no persist error, RSS growing less than 10% (or 8 MiB) from
# halfway through the run, every check passed (`tracepool run --help`).
#
# --keep-every 1 (the default here) keeps every trace, so every trace is
# written by the driver: with the main job's default (1000) nearly every
# trace is removed before its batch reaches the driver, and the storage
# driver would hardly be exercised. Kept traces stay in storage, so storage
# grows for the whole run (the table says how much): each run gets a fresh
# directory under --dir (default: $TMPDIR or /tmp), deleted after the run.
# The memory driver keeps nothing.
#
# Bisection: the first rate tried is the geometric mean of --lo (assumed
# sustained; default 1000) and --hi (assumed not; default: the traces/s of a
# closed-loop run of --probe-traces traces on the same driver and
# --keep-every, x 1.2: the closed loop runs as fast as it can, so no open
# loop sustains much more). Each sustained run raises lo, each other run
# lowers hi, for --runs runs (default 8) or until hi/lo < 1.02. Full
# outputs: target/sustained/DRIVER-RATE.txt.
set -eu

DRIVERS=""
DIR="${TMPDIR:-/tmp}"
DURATION=30
RUNS=8
LO=1000
HI=""
KEEP_EVERY=1
CONCURRENCY=""
PROBE_TRACES=20000

usage() {
    sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}
need() { [ "$#" -ge 2 ] || { echo "sustained.sh: $1 needs a value" >&2; exit 2; }; }
whole() {
    case "$2" in
        '' | *[!0-9]* | 0) echo "sustained.sh: $1 expects a whole number >= 1, got '$2'" >&2; exit 2 ;;
    esac
}
while [ "$#" -gt 0 ]; do
    case "$1" in
        --driver) need "$@"; DRIVERS="$DRIVERS $(echo "$2" | tr ',' ' ')"; shift ;;
        --dir) need "$@"; DIR="$2"; shift ;;
        --duration) need "$@"; whole "$1" "$2"; DURATION="$2"; shift ;;
        --runs) need "$@"; whole "$1" "$2"; RUNS="$2"; shift ;;
        --lo) need "$@"; whole "$1" "$2"; LO="$2"; shift ;;
        --hi) need "$@"; whole "$1" "$2"; HI="$2"; shift ;;
        --keep-every) need "$@"; whole "$1" "$2"; KEEP_EVERY="$2"; shift ;;
        --concurrency) need "$@"; whole "$1" "$2"; CONCURRENCY="$2"; shift ;;
        --probe-traces) need "$@"; whole "$1" "$2"; PROBE_TRACES="$2"; shift ;;
        -h | --help) usage ;;
        *) echo "sustained.sh: unknown argument '$1'" >&2; usage ;;
    esac
    shift
done
[ -n "$DRIVERS" ] || { echo "sustained.sh: --driver store|local|memory is required" >&2; exit 2; }
for d in $DRIVERS; do
    case "$d" in
        store | local | memory) ;;
        *) echo "sustained.sh: --driver $d: expected store, local or memory" >&2; exit 2 ;;
    esac
done
[ -d "$DIR" ] || { echo "sustained.sh: --dir $DIR is not a directory" >&2; exit 2; }

cd "$(dirname "$0")/.."
cargo build --release >/dev/null 2>&1 || cargo build --release
TARGET="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET/release/tracepool"
case "$BIN" in /*) ;; *) BIN="$(pwd)/$BIN" ;; esac
LOGS="$TARGET/sustained"
mkdir -p "$LOGS"
case "$LOGS" in /*) ;; *) LOGS="$(pwd)/$LOGS" ;; esac

TMP=""
cleanup() { if [ -n "$TMP" ]; then rm -rf "$TMP"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs `tracepool run ARGS...` with driver $1 in a fresh directory, output
# to $2; deletes the directory afterwards and sets STORED to what it held.
run_in_fresh_dir() {
    driver="$1"; log="$2"; shift 2
    TMP="$(mktemp -d "$DIR/sustained.XXXXXX")"
    case "$driver" in
        memory) set -- "$@" --memory ;;
        local) set -- "$@" --local "$TMP/traces" ;;
        store) set -- "$@" --store "$TMP/store" ;;
    esac
    if [ -n "$CONCURRENCY" ]; then set -- "$@" --concurrency "$CONCURRENCY"; fi
    status=0
    (cd "$TMP" && "$BIN" run "$@") >"$log" 2>"$log.stderr" || status=$?
    STORED="$(du -sh "$TMP" 2>/dev/null | cut -f1)"
    rm -rf "$TMP"
    TMP=""
    return "$status"
}

# The value of KEY in a `rate_result k=v ...` line.
value() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }

SUMMARY=""
for driver in $DRIVERS; do
    lo="$LO"
    hi="$HI"
    if [ -z "$hi" ]; then
        log="$LOGS/$driver-closed-loop.txt"
        echo "$driver: closed-loop run of $PROBE_TRACES traces for the upper bound" >&2
        run_in_fresh_dir "$driver" "$log" --traces "$PROBE_TRACES" --keep-every "$KEEP_EVERY" || {
            echo "sustained.sh: the closed-loop run failed (exit $?); see $log and $log.stderr" >&2
            exit 1
        }
        closed="$(awk '$1 == "traces" { for (i = 1; i < NF; i++) if ($i == "=") print $(i + 1) }' "$log")"
        [ -n "$closed" ] || { echo "sustained.sh: no traces/s in $log" >&2; exit 1; }
        hi="$(awk -v r="$closed" 'BEGIN { printf "%d", r * 1.2 }')"
        echo "$driver: closed loop $closed traces/s ($STORED stored): hi = $hi" >&2
    fi
    if [ "$hi" -le "$lo" ]; then
        new_lo="$(awk -v h="$hi" 'BEGIN { l = int(h / 10); print (l < 1 ? 1 : l) }')"
        echo "$driver: hi $hi <= lo $lo: lo lowered to $new_lo" >&2
        lo="$new_lo"
    fi
    best=""
    printf '\n%s: bisecting between %s and %s traces/s, %s s per run, --keep-every %s\n\n' \
        "$driver" "$lo" "$hi" "$DURATION" "$KEEP_EVERY"
    printf '| run | offered | achieved | completed | not started | dropped | persist errors | RSS growth %% | lag max ms | lag end ms | stored | sustained |\n'
    printf '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n'
    n=1
    while [ "$n" -le "$RUNS" ]; do
        rate="$(awk -v l="$lo" -v h="$hi" 'BEGIN {
            if (h / l < 1.02) exit
            r = int(sqrt(l * h) + 0.5)
            if (r > l && r < h) print r }')"
        [ -n "$rate" ] || break
        log="$LOGS/$driver-$rate.txt"
        echo "$driver: run $n/$RUNS at $rate traces/s for $DURATION s" >&2
        status=0
        run_in_fresh_dir "$driver" "$log" --rate "$rate" --duration "$DURATION" \
            --keep-every "$KEEP_EVERY" || status=$?
        line="$(grep '^rate_result ' "$log" | tail -1 || true)"
        if [ -z "$line" ]; then
            echo "sustained.sh: no rate_result line (exit $status); see $log and $log.stderr" >&2
            sustained="no (exit $status)"
            printf '| %s | %s | | | | | | | | | %s | %s |\n' "$n" "$rate" "$STORED" "$sustained"
        else
            sustained="$(value sustained "$line")"
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$n" "$rate" \
                "$(value achieved "$line")" "$(value completed "$line")" \
                "$(value not_started "$line")" "$(value dropped "$line")" \
                "$(value persist_errors "$line")" "$(value rss_growth_pct "$line")" \
                "$(value lag_max_ms "$line")" "$(value lag_end_ms "$line")" \
                "$STORED" "$sustained"
        fi
        if [ "$sustained" = "yes" ]; then
            lo="$rate"
            best="$rate"
        else
            hi="$rate"
        fi
        n=$((n + 1))
    done
    if [ -n "$best" ]; then
        result="$best traces/s (not sustained: $hi)"
    elif [ "$n" -eq 1 ]; then
        result="not measured (no rate between lo $lo and hi $hi to try)"
    else
        result="none of the rates tried (lowest tried not sustained: $hi; try a lower --lo)"
    fi
    printf '\n%s: highest sustained rate: %s\n' "$driver" "$result"
    SUMMARY="$SUMMARY$driver: highest sustained rate $result, $DURATION s runs, --keep-every $KEEP_EVERY
"
done
printf '\n%s' "$SUMMARY"
