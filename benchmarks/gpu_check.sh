#!/usr/bin/env bash
# Every GPU row of benchmarks/README.md, measured in one go on a CUDA machine (under 8 minutes on an H100):
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine, from the repository root or anywhere
#   bash benchmarks/gpu_check.sh --dry-run    # the same steps at tiny sizes on the CPU: checks they all run
#
# Each step has a time budget (seconds, `timeout`); a step that overruns is reported and the next
# one starts, so the whole check stays within its 8 minutes. PYTHON picks the interpreter.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
DRY_RUN=false
[[ "${1:-}" == "--dry-run" ]] && DRY_RUN=true

SEGMENTATION_MODELS=(--models unet deeplabv3_resnet50)
if $DRY_RUN; then
    QUICK=(--quick)
    SYNCS=(--quick --device cpu)
    SEGMENTATION_MODELS=(--models unet)  # DeepLabV3-ResNet50 takes minutes on a CPU even tiny
    echo "gpu_check.sh --dry-run: every step at tiny sizes on the CPU (no figure here is a measurement)"
else
    QUICK=()
    SYNCS=(--device cuda)
    if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "gpu_check.sh needs a CUDA device (or --dry-run)" >&2
        exit 2
    fi
fi

failures=0
step() {  # step BUDGET_SECONDS TITLE COMMAND...
    local budget=$1 title=$2
    shift 2
    $DRY_RUN && budget=0  # no budget on the CPU (timeout 0: none): they bound only the real check
    echo
    echo "=== $title"
    local start=$SECONDS
    timeout "$budget" "$@"
    local code=$?
    if [[ $code -ne 0 ]]; then
        failures=$((failures + 1))
        [[ $code -eq 124 ]] && echo "!!! over its ${budget} s budget: stopped" || echo "!!! failed (exit $code)"
    fi
    echo "--- $((SECONDS - start)) s"
}

# Budgets in seconds, 470 in all.
step 10 "Machine" "$PYTHON" -c "
import os, platform, torch
print(platform.processor() or platform.machine(), os.cpu_count(), 'cores, torch', torch.__version__,
      '| CUDA:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')"
step 90 "ResNet-50, 224 px, batch 128, bf16-mixed + channels_last, eager: run.py against the plain loop on
    synthetic pinned batches (medians of 3, interleaved)" \
    "$PYTHON" benchmarks/gpu_precision.py --rows synthetic --repeats 3 "${QUICK[@]}"
step 90 "The same on MIT67's JPEG loader (1,024 generated JPEGs, data.num_workers=auto), decoding on the
    CPU and on the GPU (medians of 2)" \
    "$PYTHON" benchmarks/gpu_precision.py --rows jpeg-cpu jpeg-gpu --repeats 2 --images 1024 --steps 20 \
    --warmup 8 "${QUICK[@]}"
step 100 "ResNet-50, synthetic, torch.compile (each side compiles after torch._dynamo.reset(); one repeat)" \
    "$PYTHON" benchmarks/gpu_precision.py --rows synthetic-compiled --repeats 1 "${QUICK[@]}"
step 35 "Host-device synchronisations per training step (torch.cuda.set_sync_debug_mode)" \
    "$PYTHON" benchmarks/host_syncs.py "${SYNCS[@]}"
step 40 "Segmentation: UNet and DeepLabV3-ResNet50 at 256 px, batch 8: run.py against the plain loop" \
    "$PYTHON" benchmarks/segmentation.py --repeats 3 "${SEGMENTATION_MODELS[@]}" "${QUICK[@]}"
step 30 "Style transfer: seconds per L-BFGS evaluation, float32, 128/256/512 px" \
    "$PYTHON" benchmarks/style_transfer.py --evaluations 100 --sizes 128 256 512 --repeats 1 "${QUICK[@]}"
step 25 "Style transfer, precision=bf16-mixed" \
    "$PYTHON" benchmarks/style_transfer.py --evaluations 100 --sizes 128 256 512 --repeats 1 \
    --precision bf16-mixed "${QUICK[@]}"
step 20 "Style network (Johnson et al.), 512 px, batch 8: frames/s eager, float32 and float16 autocast" \
    "$PYTHON" benchmarks/style_net_inference.py --real-time-only --repeats 3 "${QUICK[@]}"
step 30 "Input pipeline: MIT67 loader against workers (1, 2, all cores); CPU against GPU JPEG decoding" \
    "$PYTHON" benchmarks/input_pipeline.py --workers-only --repeats 2 "${QUICK[@]}"

echo
echo "gpu_check.sh: $SECONDS s in all, $failures step(s) failed or overran"
[[ $failures -eq 0 ]]
