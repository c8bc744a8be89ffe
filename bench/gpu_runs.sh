#!/usr/bin/env bash
# Trainings side by side on one GPU machine, detached so that a later call can collect them.
#
#   source bench/gpu_env.sh; export TALKGS_WHISPER_MODEL=$PWD/.carry/whisper TALKGS_COMMIT=<sha>
#   bench/gpu_runs.sh start DEADLINE_S NAME:DATASET:SEED[:VARIANT[:PRESET[:ARGS]]] ...
#   bench/gpu_runs.sh collect DEADLINE_S        # a following call on the same warm machine
#
# start: `bench/train.py DATASET --run /tmp/runs/NAME --seed SEED --variant VARIANT --preset
# PRESET ARGS $TRAIN_FLAGS` for each spec (VARIANT default none, PRESET default default; ARGS: this
# run's own bench/train.py options, commas for spaces, e.g. --other-speakers,/tmp/data/anchor;
# TRAIN_FLAGS, e.g. "--audio-kind mel", go to every run), each a detached process (setsid), with --shared-gpu
# when there is more than one. Both verbs then report every 30 s
# until all have ended or DEADLINE_S seconds have passed since the call began, and write to $OUT:
# runs.tgz (each run's bench JSON, log, config, eval/metrics.json, predictor.json),
# evals.tgz (each run's eval/ folder: the renders `talkgs eval RUN --lips-only` completes where
# MediaPipe is missing) and, where any run has its eval, mouth_table.json (bench/mouth_table.py).
# A run still training at the deadline goes on; `collect` in the next call (within the machine's
# warm window) picks it up.
set -u
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
verb=${1:?start or collect}; deadline=${2:?deadline in seconds}; shift 2
RUNS=/tmp/runs; mkdir -p "$RUNS"
if [ "$verb" = start ]; then
  shared=""; [ $# -gt 1 ] && shared=--shared-gpu
  for spec in "$@"; do
    IFS=: read -r name data seed variant preset extra <<< "$spec"
    setsid nohup python3 bench/train.py "$data" --run "$RUNS/$name" --out "$RUNS/$name.json" --seed "$seed" \
      --variant "${variant:-none}" --preset "${preset:-default}" ${extra//,/ } $shared ${TRAIN_FLAGS:-} > "$RUNS/$name.log" 2>&1 < /dev/null &
  done
  echo "started $# at $(el) s"
elif [ "$verb" != collect ]; then
  echo "gpu_runs.sh: the verb is start or collect, not $verb" >&2; exit 2
fi
while [ "$(el)" -lt "$deadline" ]; do
  n=$(pgrep -f "bench/train.py" | wc -l)
  echo "--- $(el) s: $n training; GPU $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null)"
  [ "$n" = 0 ] && break
  sleep 30
done
cd "$RUNS" || exit 1
for f in *.log; do echo "== $f"; tail -n 4 "$f"; done
done_runs=$(ls -d */eval/metrics.json 2>/dev/null | cut -d/ -f1)
if [ -n "$done_runs" ]; then
  python3 "$OLDPWD/bench/mouth_table.py" $done_runs --out "$OUT/mouth_table.json" 2>&1 | tail -n 12
fi
tar czf "$OUT/runs.tgz" *.json *.log */config.json */eval/metrics.json */predictor.json 2>/dev/null
tar czf "$OUT/evals.tgz" */eval 2>/dev/null
echo "collected at $(el) s"
