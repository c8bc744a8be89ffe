#!/usr/bin/env bash
# The speed measurements of one GPU machine in one detached chain, so that two or three calls on
# the warm machine collect them (a machine is given back 30 s after a call; the chain runs on
# between calls made at once). Carry .whl and .carry (bench/gpu_wheels.sh, bench/gpu_carry.sh
# DATA_ROOT anchor), then:
#
#   bash bench/gpu_speed.sh start COMMIT12 DEADLINE_S [STEP ...]   # first call
#   bash bench/gpu_speed.sh collect - DEADLINE_S                    # following calls
#
# start copies the tree to /tmp/repo (a later call replaces the working tree), installs the
# carried wheels, computes the anchor's Whisper features and starts the chain; both verbs then
# wait until the chain is done or DEADLINE_S seconds have passed and tar into $OUT: res.tgz (the
# bench JSONs, named <step>_<h100|h200>) and evals.tgz (the runs' eval/metrics.json and config).
# Steps, in this order unless named: train (the default, seed 0: every later step uses its run),
# render (as built, alternating with the two rasterizer passes of --two-passes, three rounds),
# serve, serve_2pass (--two-passes), serve_torch (PyTorch's face deformation), serve_eager_enc
# (the Whisper encoder without CUDA graphs), serve_mb64 (`--max-batch 64`), serve_p2 (two serve
# processes on the GPU: bench/serve.py --processes 2), train_s1 (seed 1), batch4 (the schedule of
# 4 frames per step, seed 0), profile, tests. Also: obama / obama_b4 (the default and batch4 on
# obama_v25, seed 0), obama_pair (on obama_v25, seed 0, side by side so only their quality
# counts: the default with audio conditioning, and the original preset), face43 / face43_s1 (the
# face stage a third longer, seeds 0 / 1; face43_pair: both side by side, for their quality),
# refine50 / refine50_s1 (densification every 50 steps, seeds 0 / 1). A second clip does not
# fit the first call's 64 MiB: make it with CARRY=.carry2 DATA_ONLY=1 bench/gpu_carry.sh
# DATA_ROOT obama_v25 and carry .carry2 alone in the first collect call; its steps wait up to
# 10 min for it.
set -u
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
verb=${1:?start or collect}; commit=${2:?commit, or - to collect}; deadline=${3:?deadline in seconds}; shift 3
steps=${*:-train render serve serve_2pass serve_torch serve_eager_enc serve_mb64 serve_p2 train_s1 batch4 profile tests}
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
  [[ "$commit" =~ ^[0-9a-f]{12}$ ]] || { echo "gpu_speed.sh: COMMIT12 is 12 hex digits (git rev-parse --short=12 HEAD), not $commit" >&2; exit 2; }
  rm -rf /tmp/repo && cp -r "$PWD" /tmp/repo && cd /tmp/repo || exit 1
  export TALKGS_COMMIT=$commit
  source bench/gpu_env.sh
  mkdir -p /tmp/data /tmp/runs /tmp/res && rm -rf /tmp/data/anchor && cp -r .carry/data/anchor /tmp/data/anchor
  cat > /tmp/speed_env.sh <<EOV
export PYTHONPATH=/tmp/site:/tmp/repo/.whl/site:/tmp/repo PYTHONUNBUFFERED=1
export TALKGS_WHISPER_MODEL=/tmp/repo/.carry/whisper TALKGS_COMMIT=$commit TAG=$tag STEPS="$steps"
EOV
  source /tmp/speed_env.sh
  python3 -m talkgs features /tmp/data/anchor --kind whisper 2>&1 | tail -n 1
  echo "--- set up at $(el) s"
  take_data
  cat > /tmp/speed_chain.sh <<'EOS'
cd /tmp/repo && source /tmp/speed_env.sh
R=/tmp/runs O=/tmp/res
SERVE="--dataset /tmp/data/anchor --clients 24 32 40 48 --find-max --seconds 4 --no-encode"
ALT="--batches 1,4,16,32 --frames 1000 --seconds 2 --no-mouth --rounds 3 --alternate one-pass"
clip() {  # waits for a dataset carried by a later call, then computes its Whisper features
  for i in $(seq 120); do [ -e "/tmp/data/$1/.ready" ] && break; sleep 5; done
  [ -e "/tmp/data/$1/audio_whisper.npy" ] || python3 -m talkgs features "/tmp/data/$1" --kind whisper
}
for step in $STEPS; do
  echo "[chain] $(date +%T) $step"
  case $step in
    train) python3 bench/train.py /tmp/data/anchor --run $R/default_s0 --out $O/train_$TAG.json --seed 0 ;;
    train_s1) python3 bench/train.py /tmp/data/anchor --run $R/default_s1 --out $O/train_s1_$TAG.json --seed 1 ;;
    face43) python3 bench/train.py /tmp/data/anchor --run $R/face43_s0 --out $O/face43_$TAG.json --seed 0 --variant face_x4_3 ;;
    face43_s1) python3 bench/train.py /tmp/data/anchor --run $R/face43_s1 --out $O/face43_s1_$TAG.json --seed 1 \
                 --variant face_x4_3 ;;
    refine50) python3 bench/train.py /tmp/data/anchor --run $R/refine50_s0 --out $O/refine50_$TAG.json --seed 0 \
                --variant refine_every_50 ;;
    refine50_s1) python3 bench/train.py /tmp/data/anchor --run $R/refine50_s1 --out $O/refine50_s1_$TAG.json --seed 1 \
                   --variant refine_every_50 ;;
    face43_pair) python3 bench/train.py /tmp/data/anchor --run $R/face43_s1 --out $O/face43_s1_$TAG.json --seed 1 \
                   --variant face_x4_3 --shared-gpu > $R/face43_s1.log 2>&1 &
                 python3 bench/train.py /tmp/data/anchor --run $R/face43_s0 --out $O/face43_$TAG.json --seed 0 \
                   --variant face_x4_3 --shared-gpu; wait ;;
    batch4) python3 bench/train.py /tmp/data/anchor --run $R/batch4_s0 --out $O/batch4_$TAG.json --seed 0 --variant batch4 ;;
    obama) clip obama_v25 && python3 bench/train.py /tmp/data/obama_v25 --run $R/obama_s0 --out $O/obama_$TAG.json --seed 0 ;;
    obama_b4) clip obama_v25 && python3 bench/train.py /tmp/data/obama_v25 --run $R/obama_b4_s0 --out $O/obama_b4_$TAG.json \
                --seed 0 --variant batch4 ;;
    obama_pair) clip obama_v25 && python3 -m talkgs features /tmp/data/obama_v25 --kind mel && {
                python3 bench/train.py /tmp/data/obama_v25 --run $R/obama_ac_s0 --out $O/obama_ac_$TAG.json --seed 0 \
                  --variant audio_conditioning --shared-gpu > $R/obama_ac.log 2>&1 &
                python3 bench/train.py /tmp/data/obama_v25 --run $R/obama_orig_s0 --out $O/obama_orig_$TAG.json --seed 0 \
                  --preset original --shared-gpu; wait; } ;;
    render) python3 bench/render.py $R/default_s0 $ALT --out $O/render_$TAG.json ;;
    serve) python3 bench/serve.py $R/default_s0 $SERVE --out $O/serve_$TAG.json ;;
    serve_torch) python3 bench/serve.py $R/default_s0 $SERVE --torch-face --out $O/serve_torch_$TAG.json ;;
    serve_2pass) python3 bench/serve.py $R/default_s0 $SERVE --two-passes --out $O/serve_2pass_$TAG.json ;;
    serve_eager_enc) python3 bench/serve.py $R/default_s0 $SERVE --eager-encoder --out $O/serve_eager_enc_$TAG.json ;;
    serve_mb64) python3 bench/serve.py $R/default_s0 $SERVE --max-batch 64 --out $O/serve_mb64_$TAG.json ;;
    serve_p2) python3 bench/serve.py $R/default_s0 $SERVE --processes 2 --out $O/serve_p2_$TAG.json ;;
    profile) python3 bench/train_profile.py /tmp/data/anchor --stage face --checkpoint $R/default_s0/checkpoints/face.pt \
               --at 0.9 --steps 20 --out $O/profile_$TAG.json ;;
    tests) timeout 300 python3 -m pytest -q tests/gpu ;;
    *) echo "gpu_speed.sh: no step $step" ;;
  esac > $R/$step.log 2>&1
done
echo "[chain] $(date +%T) done"
EOS
  setsid nohup bash /tmp/speed_chain.sh > /tmp/speed_chain.log 2>&1 < /dev/null &
elif [ "$verb" = collect ]; then
  take_data
else
  echo "gpu_speed.sh: the verb is start or collect, not $verb" >&2; exit 2
fi
while [ "$(el)" -lt "$deadline" ] && ! grep -q "\[chain\].* done" /tmp/speed_chain.log 2>/dev/null; do sleep 15; done
echo "--- $(el) s"; cat /tmp/speed_chain.log
for f in /tmp/runs/*.log; do echo "== $f"; grep -v "^\s*$" "$f" | tail -n 8 | cut -c1-200; done
tar czf "$OUT/res.tgz" -C /tmp res
(cd /tmp/runs && tar czf "$OUT/evals.tgz" $(ls -d */eval/metrics.json */config.json 2>/dev/null))
