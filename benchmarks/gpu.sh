#!/usr/bin/env bash
# The GPU checks of issues #2, #3 and #5 in one command, for a session that is lent a GPU machine (the
# device tool runs it in the repository root; what lands in $OUT comes back):
#   bash benchmarks/gpu.sh            # carry .gpu-wheels when the machine lacks a dependency (below)
# 1. the CUDA tests (tests/test_gpu.py, skipped on machines without CUDA);
# 2. rb-bench corruptions on CUDA, 224 and 32 px (#2: >= 20,000 images/s over the 15 at 224 px);
# 3. rb-bench eval, ResNet-50 on ImageNet-C cells, AMP + channels-last (#3: on-the-fly cost vs inference);
# 4. rb-bench train, WRN-40-2 at 32 px, AMP + channels-last (#5: augmentation <= 10 % of step time).
# Each step has its own time limit, so a slow one still leaves the others' files.
# The machine has no package registry: its own torch is used (pip install --no-deps). A dependency it
# lacks can be carried as wheels made here beforehand, for its Python version, e.g.
#   pip download -d .gpu-wheels --only-binary=:all: --python-version 3.12 --no-deps rich markdown-it-py \
#       mdurl pygments timm huggingface_hub safetensors scikit-learn threadpoolctl joblib
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
log="$OUT/gpu-log.txt"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
} >"$log" 2>&1
if [ -d .gpu-wheels ]; then
  python3 -m pip install -q --no-index --find-links .gpu-wheels .gpu-wheels/*.whl >>"$log" 2>&1
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >>"$log" 2>&1 || echo "pip install failed; using PYTHONPATH" >>"$log"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 - >>"$log" 2>&1 <<'EOF'
import importlib
for m in ("numpy", "scipy", "PIL", "rich", "timm", "safetensors", "sklearn", "skimage", "cv2", "imagecorruptions"):
    try:
        importlib.import_module(m)
        print("have", m)
    except Exception as e:  # noqa: BLE001
        print("MISSING", m, type(e).__name__, e)
EOF
bench="python3 -m robustbench_augmix.cli.bench"
timeout 300 python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider >"$OUT/gpu-tests.txt" 2>&1
echo "tests rc=$?" >>"$log"
timeout 240 $bench corruptions --device cuda --sizes 224,32 --batch 256 --no-reference \
  --json "$OUT/corruptions-cuda.json" --markdown >"$OUT/corruptions-cuda.md" 2>>"$log"
echo "corruptions rc=$?" >>"$log"
timeout 240 $bench eval --model torchvision:resnet50 --suite imagenet-c --device cuda --amp --channels-last \
  --batch 256 --images 2048 --json "$OUT/eval-resnet50-cuda.json" --markdown >"$OUT/eval-resnet50-cuda.md" 2>>"$log"
echo "eval rc=$?" >>"$log"
timeout 180 $bench train --model cifar:wrn40_2 --sizes 32 --device cuda --amp --channels-last \
  --json "$OUT/train-wrn40_2-cuda.json" --markdown >"$OUT/train-wrn40_2-cuda.md" 2>>"$log"
echo "train rc=$?" >>"$log"
tail -3 "$OUT/gpu-tests.txt" >>"$log"
cat "$log"
