#!/usr/bin/env bash
# Two more alternating rounds of the 1000 x 100 msg/s fan-out (after first this time),
# for the same two builds as ab-structure.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=bench-results/2026-12-06/ab-structure
for round in 3 4; do
  for build in after before; do
    bin="$BEFORE"; [ "$build" = after ] && bin="$AFTER"
    SHOAL_BIN="$bin" BENCH_BIN="$BENCH" STEPS=shoal-fanout RATES=100 REPS=1 \
      FANOUT_TOOL=shoal-bench scripts/bench-realtime.sh "$OUT/fanout-r$round-$build"
  done
done
