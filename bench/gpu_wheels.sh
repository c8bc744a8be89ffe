#!/usr/bin/env bash
# Run on the dev machine, in the repo root: fills the ignored .whl/ folder with what the GPU
# machine (Python 3.12, torch+CUDA, no internet, no tyro/PyAV/mediapipe/stlpips) needs:
# the prebuilt gsplat wheel, tyro and its pure-Python deps, and ST-LPIPS with only its alex
# weights (the vgg ones would not fit in the 64 MiB that travels). Then carry ".whl" (and the
# dataset folder) and start the GPU command with `source bench/gpu_env.sh`.
set -euo pipefail
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
mkdir -p .whl/site
cp ../shared/wheels/gsplat-1.5.3-cp312-cp312-linux_x86_64.whl .whl/
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 -d .whl tyro==1.0.17 docstring_parser==0.18.0 typeguard==4.6.1
site=$(.venv/bin/python -c "import stlpips_pytorch, os; print(os.path.dirname(stlpips_pytorch.__file__))")
rm -rf .whl/site/stlpips_pytorch
cp -r "$site" .whl/site/
rm -f .whl/site/stlpips_pytorch/weights/vST0.0/vgg_shift_tolerant.pth
find .whl/site -name __pycache__ -prune -exec rm -rf {} +
du -sh .whl
