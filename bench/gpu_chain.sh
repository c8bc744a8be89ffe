#!/usr/bin/env bash
# A GPU machine's measurements (speed, and trainings for their quality) in one detached chain, so
# that two or three calls on the warm machine collect them (a machine is given back 30 s after a
# call; the chain runs on between calls made at once). Carry .whl and .carry (bench/gpu_wheels.sh,
# bench/gpu_carry.sh DATA_ROOT anchor), then:
#
#   bash bench/gpu_chain.sh start COMMIT12 DEADLINE_S [STEP ...]   # first call
#   bash bench/gpu_chain.sh collect - DEADLINE_S                    # following calls
#
# start copies the tree to /tmp/repo (a later call replaces the working tree), installs the
# carried wheels, computes the anchor's Whisper features and starts the chain; both verbs then
# wait until the chain is done or DEADLINE_S seconds have passed and tar into $OUT: res.tgz (the
# bench JSONs, named <step>_<tag> or <clip>_<name>_s<seed>_<tag>, tag h100 or h200) and evals.tgz
# (the runs' eval/metrics.json and config).
# Steps (bench/gpu_steps.py says what each runs; `python3 bench/gpu_steps.py STEP` prints it): the
# named ones (render, serve, serve_2pass, serve_torch, serve_eager_enc, serve_mb64, serve_p2,
# profile, tests), which use the run of `train` (the default on the anchor, seed 0); a training
# train:CLIP:NAME:SEED (NAME a bench variant of bench/train.py or a preset); and trainings side by
# side for their quality, side:CLIP:NAME:SEED,CLIP:NAME:SEED,... Every step is checked before the
# chain starts. A second clip does not fit the first call's 64 MiB: make it with CARRY=.carry2
# DATA_ONLY=1 bench/gpu_carry.sh DATA_ROOT obama_v25 and carry .carry2 alone in the first collect
# call; its trainings wait up to 10 min for it.
set -u
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
verb=${1:?start or collect}; commit=${2:?commit, or - to collect}; deadline=${3:?deadline in seconds}; shift 3
steps=${*:-train render serve serve_2pass serve_torch serve_eager_enc serve_mb64 serve_p2 train:anchor:none:1 profile tests}
take_data() {  # datasets carried in .carry2 (any call) into /tmp/data, marked ready when whole
  for d in .carry2/data/*/; do
    [ -d "$d" ] || continue
    n=$(basename "$d"); [ -e "/tmp/data/$n/.ready" ] && continue
    rm -rf "/tmp/data/$n" && mkdir -p /tmp/data && cp -r "$d" "/tmp/data/$n"
    python3 -c "import lzma, sys; open(sys.argv[1][:-3], 'wb').write(lzma.open(sys.argv[1]).read())" \
      "/tmp/data/$n/audio.wav.xz" && rm "/tmp/data/$n/audio.wav.xz"
    touch "/tmp/data/$n/.ready"; echo "--- took $n"
  done
}
tag=$(nvidia-smi --query-gpu=name --format=csv,noheader | grep -o "H[12]00" | head -1 | tr H h)
if [ "$verb" = start ]; then
  # The results' schema names the commit by 12 hex digits (tests/test_bench.py checks it).
  [[ "$commit" =~ ^[0-9a-f]{12}$ ]] || { echo "gpu_chain.sh: COMMIT12 is 12 hex digits (git rev-parse --short=12 HEAD), not $commit" >&2; exit 2; }
  rm -rf /tmp/repo && cp -r "$PWD" /tmp/repo && cd /tmp/repo || exit 1
  export TALKGS_COMMIT=$commit
  source bench/gpu_env.sh
  cat > /tmp/speed_env.sh <<EOV
export PYTHONPATH=/tmp/site:/tmp/repo/.whl/site:/tmp/repo PYTHONUNBUFFERED=1 DATA=/tmp/data RUNS=/tmp/runs RES=/tmp/res
export TALKGS_WHISPER_MODEL=/tmp/repo/.carry/whisper TALKGS_COMMIT=$commit TAG=$tag STEPS="$steps"
EOV
  source /tmp/speed_env.sh
  python3 bench/gpu_steps.py --check $steps || exit 2
  mkdir -p /tmp/data /tmp/runs /tmp/res && rm -rf /tmp/data/anchor && cp -r .carry/data/anchor /tmp/data/anchor
  python3 -m talkgs features /tmp/data/anchor --kind whisper 2>&1 | tail -n 1
  touch /tmp/data/anchor/.ready
  echo "--- set up at $(el) s"
  take_data
  cat > /tmp/speed_chain.sh <<'EOS'
cd /tmp/repo && source /tmp/speed_env.sh
for step in $STEPS; do
  echo "[chain] $(date +%T) $step"
  base=$RUNS/$(echo "$step" | tr ':,' '_+')
  python3 bench/gpu_steps.py "$step" > "$base.sh" && { cat "$base.sh"; bash "$base.sh"; } > "$base.log" 2>&1
done
echo "[chain] $(date +%T) done"
EOS
  setsid nohup bash /tmp/speed_chain.sh > /tmp/speed_chain.log 2>&1 < /dev/null &
elif [ "$verb" = collect ]; then
  take_data
else
  echo "gpu_chain.sh: the verb is start or collect, not $verb" >&2; exit 2
fi
while [ "$(el)" -lt "$deadline" ] && ! grep -q "\[chain\].* done" /tmp/speed_chain.log 2>/dev/null; do sleep 15; done
echo "--- $(el) s"; cat /tmp/speed_chain.log
for f in /tmp/runs/*.log; do echo "== $f"; grep -v "^\s*$" "$f" | tail -n 8 | cut -c1-200; done
tar czf "$OUT/res.tgz" -C /tmp res
(cd /tmp/runs && tar czf "$OUT/evals.tgz" $(ls -d */eval/metrics.json */config.json 2>/dev/null))
