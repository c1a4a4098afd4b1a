#!/usr/bin/env bash
# The GPU sampling checks, run as one script on a lent card (see bench/RESULTS.md):
#   [ONLY_GRAPHS=1] bash bench/gpu_sample.sh OUT_DIR [FASHION_DIR]   # ONLY_GRAPHS=1: step 4 alone
# 1. train a DiT-S/2 briefly on Fashion-MNIST so that samples are not flat (raw weights: after 300 steps an EMA
#    at decay 0.9999 still holds 97% of the initial, all-zero-output weights);
# 2. sample_ddp.py on CUDA: fp32 at two batch sizes and bf16, counting the uint8 values that differ;
# 3. bench/sample.py: images/s per sampler for DiT-XL/2 at batch 64, bf16, cfg 1.5;
# 4. whether CUDA graphs pay: DiT-S/2 and DiT-XL/2, DDIM-50, compile against compile + CUDA graphs.
set -uo pipefail
out=${1:?usage: bench/gpu_sample.sh OUT_DIR [FASHION_DIR]}
mkdir -p "$out"
if [ -n "${2:-}" ]; then
  raw=~/.cache/minsnr-dit/FashionMNIST/raw && mkdir -p $raw && cp "$2"/*.gz $raw && gunzip -kf $raw/*.gz
fi
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1  # a lent card has no editable install (make setup): import from here
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/machine.txt"
run=/tmp/run-s2
if [ -z "${ONLY_GRAPHS:-}" ]; then
timeout 90 python3 train.py --model DiT-S/2 --precision bf16 --global-batch-size 256 --max-steps 300 \
  --ckpt-every 300 --log-every 100 --num-workers 4 --results-dir $run > "$out/train.txt" 2>&1
tail -2 $run/log.txt
ck=$run/checkpoints/0000300.pt
for cfg in "fp32 250" "fp32 100" "bf16 250"; do set -- $cfg
  timeout 60 python3 sample_ddp.py --ckpt $ck --num-samples 500 --per-proc-batch-size $2 --precision $1 \
    --weights raw --sampler heun --steps 20 --out /tmp/s-$1-$2.npz 2>&1 | grep -v "img/s]" | tail -2
done
python3 - <<'PY' | tee "$out/batch_size_diffs.txt"
import numpy as np
load = lambda n: np.load(f"/tmp/s-{n}.npz")["arr_0"].astype(int)
a = load("fp32-250")
for other in ("fp32-100", "bf16-250"):
    b = load(other)
    print(f"fp32-250 vs {other}: {(a != b).sum()} of {a.size} uint8 values differ ({(a != b).mean():.2e}); "
          f"max |diff| {np.abs(a - b).max()}; mean |diff| {np.abs(a - b).mean():.3f}")
PY
cp /tmp/s-fp32-250.png "$out/grid.png"
[ -n "${SKIP_BENCH:-}" ] || timeout 150 python3 bench/sample.py --model DiT-XL/2 --batch 64 --precision bf16 \
  --runs ddpm:250,ddim:50,heun:50,dpm++:20 --json "$out/sample.jsonl" 2>&1 | tail -4
fi
for m in "DiT-S/2 16" "DiT-XL/2 64"; do set -- $m; for g in "" --cuda-graphs; do
  [ -n "${SKIP_BENCH:-}" ] || timeout 150 python3 bench/sample.py --model $1 --batch $2 --precision bf16 --compile $g \
    --runs ddim:50 --json "$out/sample.jsonl" 2>&1 | tail -1
done; done
