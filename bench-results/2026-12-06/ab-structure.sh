#!/usr/bin/env bash
# Alternating runs of two release builds, before (10528ec) and after (034ae47) the
# structural change (use-cases, configuration sections, test kit): the HTTP rows
# (embedded, distributed x1 and x3; no peer) and the 1000 x 100 msg/s fan-out, two
# rounds, the builds taking turns. Same client (shoal-bench of 034ae47) for both.
#   BEFORE=/path/shoal AFTER=/path/shoal BENCH=/path/shoal-bench bench-results/2026-12-06/ab-structure.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=bench-results/2026-12-06/ab-structure
for round in 1 2; do
  for build in before after; do
    bin="$BEFORE"; [ "$build" = after ] && bin="$AFTER"
    SHOAL_BIN="$bin" PEER=0 scripts/bench-all.sh "$OUT/http-r$round-$build"
    SHOAL_BIN="$bin" BENCH_BIN="$BENCH" STEPS=shoal-fanout RATES=100 REPS=1 \
      FANOUT_TOOL=shoal-bench scripts/bench-realtime.sh "$OUT/fanout-r$round-$build"
  done
done
