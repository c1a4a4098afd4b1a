#!/usr/bin/env bash
# `make bench`: regenerate the CPU figures of bench/RESULTS.md (about 30 minutes on 2 cores; run it on a quiet
# machine). Each script appends one JSON line per result to bench/cpu-<name>.jsonl and prints a summary.
#   CKPT=RUN/checkpoints/NNNNNNN.pt bash bench/cpu.sh   # also FD-fashion against NFE for that checkpoint (+3 h)
set -euo pipefail
py=${PYTHON:-.venv/bin/python}
# The step with glibc's default malloc and with training/malloc.py's, each without and with transparent huge pages
# for malloc (a glibc tunable, read at process start: `export GLIBC_TUNABLES=glibc.malloc.hugetlb=1`).
for tunables in "" glibc.malloc.hugetlb=1; do for malloc in default keep; do for c in "" --compile; do
  GLIBC_TUNABLES=$tunables $py bench/train_step.py --model DiT-S/2 --batch 16 --steps 10 --warmup 3 $c \
    --malloc $malloc --json bench/cpu-train_step.jsonl
done; done; done
$py bench/optimizer.py --json bench/cpu-optimizer.jsonl  # fused against foreach AdamW
$py bench/attention.py --json bench/cpu-attention.jsonl  # SDPA against a matmul attention
$py bench/sample.py --model DiT-S/2 --batch 8 --runs ddim:10,heun:10,dpm++:10 --json bench/cpu-sample.jsonl
demand=$($py -c "import json; print(max(json.loads(l)['images_per_s'] for l in open('bench/cpu-train_step.jsonl')))")
$py bench/data_loader.py --batch 16 --workers 2 --demand "$demand"
$py bench/evaluate.py --batch 10 --batches 3 --json bench/cpu-evaluate.jsonl
$py bench/evaluate.py --extractor fashion --image-size 32 --channels 1 --batch 500 --json bench/cpu-evaluate.jsonl
# FD-fashion against NFE: 2000 samples per setting, about 3 CPU-hours (DDPM-250 is half of it); cached per setting.
if [ -n "${CKPT:-}" ]; then
  $py bench/quality_per_nfe.py --ckpt "$CKPT" --num-samples 2000 --nfe 5,10,20,50,250 --out results/quality_per_nfe
fi
