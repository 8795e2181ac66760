#!/bin/sh
# The Go package's benchmark loops (simple, complex, subscription, space
# operations) on tracepool's persistent drivers, every trace flushed to
# storage before it is removed, on a disk directory and on a tmpfs: ROUNDS
# fresh processes per driver and file system, drivers alternating within a
# round. Prints the medians and the ratios to the Go package's local driver
# measured on this machine with its own loops (figures taken as given:
# ext4 549 µs / 1.82 ms / 584 µs / 3.05 ms, tmpfs 202 / 594 / 236 / 974 µs).
#
#   profiling/storage_loops.sh
#   ROUNDS=5 SECS=1 DRIVERS="local store" DISK=target/loops-disk TMPFS=/dev/shm profiling/storage_loops.sh
#
# Targets (issue 11): the default driver >= 10x Go on ext4 for simple and
# complex; the local driver >= 3x Go on ext4 and tmpfs.
# Raw lines are kept in $OUT (default: target/storage_loops.tsv).
set -eu
ROUNDS="${ROUNDS:-5}"
SECS="${SECS:-1}"
DRIVERS="${DRIVERS:-local store}"
LOOPS="${LOOPS:-simple complex subscription space_operations}"
cd "$(dirname "$0")/.."
DISK="${DISK:-$(pwd)/target/storage-loops}"
TMPFS="${TMPFS:-/dev/shm}"
# shellcheck disable=SC2086
cargo build --release --example go_loops ${CARGO_FLAGS:-} >/dev/null 2>&1 || \
    cargo build --release --example go_loops ${CARGO_FLAGS:-}
BIN="${CARGO_TARGET_DIR:-target}/release/examples/go_loops"
OUT="${OUT:-${CARGO_TARGET_DIR:-target}/storage_loops.tsv}"
mkdir -p "$DISK"
: > "$OUT"
r=1
while [ "$r" -le "$ROUNDS" ]; do
    for fs in disk tmpfs; do
        if [ "$fs" = disk ]; then parent="$DISK"; else parent="$TMPFS"; fi
        for d in $DRIVERS; do
            for l in $LOOPS; do
                echo "round $r/$ROUNDS: $fs $d $l" >&2
                dir="$(mktemp -d "$parent/tracepool-loops.XXXXXX")"
                "$BIN" --driver "$d" --dir "$dir/traces" --secs "$SECS" --loop "$l" --tsv \
                    | sed "s/^/$r\t$fs\t$d\t/" >> "$OUT"
                rm -rf "$dir"
            done
        done
    done
    r=$((r + 1))
done
python3 - "$OUT" <<'PY'
import statistics, sys
GO = {  # µs per loop, the Go package's local driver on this machine
    "disk": {"simple": 549, "complex": 1820, "subscription": 584, "space_operations": 3050},
    "tmpfs": {"simple": 202, "complex": 594, "subscription": 236, "space_operations": 974},
}
runs = {}
for line in open(sys.argv[1]):
    rnd, fs, driver, engine, loop, ns, n = line.rstrip("\n").split("\t")
    runs.setdefault((fs, driver, loop), []).append(float(ns) / 1e3)
drivers = sorted({d for _, d, _ in runs})
n = max((len(v) for v in runs.values()), default=0)
print(f"medians of {n} fresh processes (µs per loop, min–max); every trace flushed before remove\n")
head = "| file system | loop | Go local | " + " | ".join(
    f"tracepool {d} | Go / {d}" for d in drivers) + " |"
print(head)
print("|---|---|---:|" + "---:|---:|" * len(drivers))
for fs in ("disk", "tmpfs"):
    for loop, g in GO[fs].items():
        cells = []
        for d in drivers:
            v = runs.get((fs, d, loop))
            if not v:
                cells += ["—", "—"]
                continue
            m = statistics.median(v)
            cells += [f"{m:.1f} ({min(v):.1f}–{max(v):.1f})", f"**{g/m:.1f}x**"]
        print(f"| {fs} | {loop} | {g} | " + " | ".join(cells) + " |")
PY
