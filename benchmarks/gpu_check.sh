#!/usr/bin/env bash
# The GPU check of issue 12, for a machine with one NVIDIA GPU (<= 8 minutes):
#   1. a bf16 training smoke run of the HuBERT-base-architecture student (steps/s, peak memory)
#   2. torchrun DDP on 1 GPU: the IEMOCAP recipe on a small generated tree (hubert-base, capped)
#   3. the ONNX models (HuBERT-base and a Whisper tiny.en student) on the CUDA execution
#      provider: parity with CPU, audio-s/s at batch 1 and 8 by session.run, by I/O binding and
#      through the server's Runtime
#   4. the server's /health reports the CUDA provider
# Needs the train extras and onnxruntime-gpu (make ORT_EXTRA=gpu TORCH=torch ...).
#   benchmarks/gpu_check.sh [--dry-run] [OUT_DIR]     (--dry-run: CPU and the tiny student,
#                                                      to check the script where no GPU is)
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=""
if [ "${1:-}" = "--dry-run" ]; then DRY="--dry-run"; shift; fi
OUT="${1:-benchmarks/results/gpu_check}"
PY="${PY:-.venv/bin/python}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
started=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - started )) s)"; }

if [ -z "$DRY" ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'torch has no CUDA'; print(torch.__version__, torch.version.cuda)"
fi

step "1/4 bf16 training steps"
timeout 150 "$PY" benchmarks/gpu_check.py train --out "$OUT" $DRY

step "2/4 torchrun DDP, 1 process"
# 5 sessions x 2 speakers x 4 classes x PER utterances of 2 s (the dry run: fewer, on 2 CPU cores)
if [ -n "$DRY" ]; then PER=3; LIMIT=600; STUDENT=(--student_model=tiny --cpu --max_seconds=1.0)
else PER=12; LIMIT=240; STUDENT=(--student_model=hubert-base); fi
TREE="$OUT/iemocap-small-$PER"
[ -d "$TREE/Session5" ] || "$PY" -c "from training.data.fake_iemocap import make_fake_iemocap as m; m('$TREE', per_class=$PER, seconds=2.0)"
rm -rf "$OUT/ddp-run"
timeout "$LIMIT" "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m training.distill \
  --preset iemocap --data_path="$TREE" --run_dir="$OUT/ddp-run" --folds=Ses01 --ling_model=minilm \
  --epochs=2 --max_steps=10 --teacher_max_steps=5 --ling_epochs=1 --pros_epochs=1 --num_workers=2 \
  "${STUDENT[@]}" > "$OUT/ddp.log" 2>&1 || { tail -30 "$OUT/ddp.log"; exit 1; }
grep -E "EmoDistill run|refit .* test UA|student .* test UA" "$OUT/ddp-run/log.txt"

step "3/4 ONNX on the CUDA execution provider"
timeout 240 "$PY" benchmarks/gpu_check.py onnx --out "$OUT" $DRY

step "4/4 the server's /health"
timeout 120 "$PY" benchmarks/gpu_check.py serve --out "$OUT" $DRY

step "done"
