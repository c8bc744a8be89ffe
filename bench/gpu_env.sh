# Source on the GPU machine (torch+CUDA there, no PyAV/mediapipe): installs the carried wheels
# (gsplat, tyro and its deps; mediapipe from .carry when bench/gpu_carry.sh made it) into /tmp/site and puts them, a trimmed ST-LPIPS copy (.whl/site)
# and the repo on PYTHONPATH. See README "GPU machine".
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
# MediaPipe for the lip metrics of `talkgs eval` (bench/gpu_carry.sh), when carried.
if [ -f .carry/mediapipe/mediapipe.zip ]; then python3 -m zipfile -e .carry/mediapipe/mediapipe.zip /tmp/site; fi
# bench/gpu_carry.sh sends the datasets' audio.wav xz-compressed.
python3 - <<'EOF'
import glob, lzma, os
for p in glob.glob(".carry/data/*/audio.wav.xz"):
    with lzma.open(p) as f, open(p[:-3], "wb") as g:
        g.write(f.read())
    os.remove(p)
EOF
export PYTHONPATH=/tmp/site:$PWD/.whl/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
# The copy of the tree here has no .git: bench results name their commit from TALKGS_COMMIT, set in
# the command (e.g. TALKGS_COMMIT=1a2b3c4d5e6f, the output of `git rev-parse --short=12 HEAD` at home).
[ -n "${TALKGS_COMMIT:-}" ] || echo "gpu_env.sh: TALKGS_COMMIT is not set: bench results will name the commit 'unknown'"
python3 -c "import torch, gsplat; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '', 'gsplat', gsplat.__version__)"
set +e
