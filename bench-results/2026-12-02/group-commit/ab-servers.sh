#!/usr/bin/env bash
# Alternating A/B of server binaries: old (/tmp/ab/shoal) vs group commit (/tmp/gc/shoal)
cd /work/main
OUT=$1; ROUNDS=${ROUNDS:-3}; REPS=${REPS:-3}
python3 /tmp/fsyncprobe.py $((ROUNDS * 2 * (REPS * 13 + 25))) > $OUT-fsync.txt &
for r in $(seq 1 $ROUNDS); do
  for v in ab gc; do
    SHOAL_BIN=/tmp/$v/shoal BENCH_BIN=/tmp/gc/shoal-bench STEPS=shoal-fanout RATES=100 REPS=$REPS FANOUT_TOOL=shoal-bench \
      timeout 900 scripts/bench-realtime.sh $OUT/$v-round$r > $OUT/$v-round$r.log 2>&1 || echo "fail $v $r"
  done
done
wait
