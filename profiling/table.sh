#!/bin/sh
# Prints the dhat table (bytes/iter, blocks/iter, peak live bytes, retained
# growth/iter) for every scenario on tracepool and on the baseline port of the
# reference design.
#
#   profiling/table.sh [ITERS]        (default 10000)
#
# Uses `cargo run --release --example heap_profile`; extra cargo flags can be
# given in CARGO_FLAGS (e.g. CARGO_FLAGS=--no-default-features).
set -eu
ITERS="${1:-10000}"
cd "$(dirname "$0")/.."
# shellcheck disable=SC2086
cargo build --release --example heap_profile ${CARGO_FLAGS:-} >/dev/null 2>&1 || \
    cargo build --release --example heap_profile ${CARGO_FLAGS:-}
BIN="${CARGO_TARGET_DIR:-target}/release/examples/heap_profile"
case "$BIN" in /*) ;; *) BIN="$(pwd)/$BIN" ;; esac
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
printf '| scenario | engine | iters | bytes/iter | blocks/iter | peak live bytes | retained/iter |\n'
printf '|---|---|---:|---:|---:|---:|---:|\n'
for s in simple sequential parallel space logging complex subscription space_ops; do
    for e in tracepool baseline; do
        # Each run in its own directory, so dhat-heap.json files do not collide.
        line="$(cd "$TMP" && "$BIN" --scenario "$s" --iters "$ITERS" --engine "$e" --tsv 2>/dev/null)"
        echo "$line" | awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7 }'
    done
done
