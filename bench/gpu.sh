#!/usr/bin/env bash
# The GPU checks, run as one script on a lent card (see bench/RESULTS.md):
#   [SKIP_TRAIN=1] bash bench/gpu.sh OUT_DIR [FASHION_DIR]
# 1. train.py under torchrun with nccl, bf16 and torch.compile on Fashion-MNIST, then a resume;
# 2. bench/train_step.py on DiT-XL/2 at batch 32: fp32, bf16, bf16 + compile, and bf16 with checkpointing.
set -uo pipefail
out=${1:?usage: bench/gpu.sh OUT_DIR [FASHION_DIR]}
mkdir -p "$out"
if [ -n "${2:-}" ]; then  # hand the IDX files to the torchvision fallback when the Debian package is absent
  raw=~/.cache/minsnr-dit/FashionMNIST/raw && mkdir -p $raw && cp "$2"/*.gz $raw && gunzip -kf $raw/*.gz
fi
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1  # a lent card has no editable install (make setup): import from here
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/machine.txt"
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)" | tee -a "$out/machine.txt"
git log -1 --format='commit %h %cd' 2>/dev/null | tee -a "$out/machine.txt"

run=/tmp/run-dit-s2
if [ -z "${SKIP_TRAIN:-}" ]; then  # SKIP_TRAIN=1: only the train_step benches (step 2)
timeout 150 torchrun --nproc_per_node=1 train.py --model DiT-S/2 --precision bf16 --compile \
  --global-batch-size 256 --max-steps 400 --ckpt-every 200 --log-every 100 --num-workers 4 \
  --results-dir $run > "$out/train.txt" 2>&1
timeout 60 torchrun --nproc_per_node=1 train.py --model DiT-S/2 --precision bf16 \
  --global-batch-size 256 --max-steps 500 --ckpt-every 250 --log-every 100 --num-workers 4 \
  --results-dir $run --resume auto >> "$out/train.txt" 2>&1
cat $run/log.txt; grep -a "error\|Error" "$out/train.txt" | tail -5; cp $run/metrics.csv "$out/train_metrics.csv"
fi

bench() { timeout "$1" python3 bench/train_step.py --model DiT-XL/2 --batch 32 --steps 15 --warmup 3 \
  --json "$out/train_step.jsonl" "${@:2}" 2>&1 | tail -3 | tee -a "$out/train_step.txt"; }
bench 45 --precision fp32
bench 40 --precision bf16
bench 40 --precision bf16 --grad-checkpoint
bench 140 --precision bf16 --compile
