#!/usr/bin/env bash
# The GPU version of `make reproduce-small` (results/gpu-small/), sized for a short loan of one card:
#   bash studies/reproduce_gpu_small.sh OUT_DIR [FASHION_DIR]
# The main pair only (x0: const against min_snr, γ = 5) with 3 seeds, ViT-S/4 on Fashion-MNIST (the CPU study's
# recipe, configs/fashion_vit-t4_x0_min_snr.toml, with a bigger model and batch), all 6 runs side by side on the
# one card, checkpointing every CKPT_EVERY steps, until SCORE_S seconds before the end of BUDGET_S. Meanwhile one
# process per run scores each new checkpoint's EMA weights by FD-fashion on NUM_SAMPLES samples (Heun-10) and
# deletes it, until the end of BUDGET_S. The runs stop on the clock, so the step count is whatever the card
# reached; the logs say it. The defaults are what produced results/gpu-small/ on one H100 in 7 minutes (6 runs
# of about 3000 steps, all 35 checkpoints scored; add SKIP_EVAL_CHECK=1 as that run did). For a longer study
# raise BUDGET_S (and NUM_SAMPLES, CKPT_EVERY with it). A toy run on the CPU, for checking the script itself:
#   MODEL=ViT-T/4 BATCH=32 CKPT_EVERY=50 NUM_SAMPLES=300 SEEDS=0 EXTRA= BUDGET_S=360 SCORE_S=90 OMP_NUM_THREADS=1 \
#     bash studies/reproduce_gpu_small.sh /tmp/out
# First, evaluate_fid.py's CUDA path against its CPU path on a randomly initialised Inception (issue #5), unless
# SKIP_EVAL_CHECK=1.
set -uo pipefail
final=${1:?usage: studies/reproduce_gpu_small.sh OUT_DIR [FASHION_DIR]}
mkdir -p "$final"
if [ -n "${2:-}" ]; then  # hand the IDX files to the torchvision fallback when the Debian package is absent
  raw=~/.cache/minsnr-dit/FashionMNIST/raw && mkdir -p $raw && cp "$2"/*.gz $raw && gunzip -kf $raw/*.gz
fi
# A lent card has no editable install (make setup), so the scripts import from here.
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TORCHINDUCTOR_COMPILE_THREADS=2
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}  # 12 processes share the CPU cores; the default (all cores each) thrashes
MODEL=${MODEL:-ViT-S/4} BATCH=${BATCH:-128} CKPT_EVERY=${CKPT_EVERY:-500} NUM_SAMPLES=${NUM_SAMPLES:-2000}
SEEDS=${SEEDS:-0 1 2} EXTRA=${EXTRA---precision bf16 --compile}  # EXTRA="" for fp32 eager
BUDGET_S=${BUDGET_S:-450} SCORE_S=${SCORE_S:-130}  # the whole script's seconds; the last SCORE_S are for scoring
work=${WORK:-/tmp/gpu-small} && out=${WORK:-/tmp/gpu-small}/report  # the device tool returns only a few files:
rm -rf $work && mkdir -p $work/runs $out                                  # OUT_DIR gets the results and logs.tgz
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)"
  git log -1 --format='commit %h %cd' 2>/dev/null; date -u; } | tee "$out/machine.txt"

deadline=$((SECONDS + BUDGET_S))
device=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
[ -n "${SKIP_EVAL_CHECK:-}" ] || timeout 80 python3 - "$work" "$device" <<'PY' 2>&1 | tee "$out/evaluate_fid_cuda.txt"
# A random inception-v3-compat (as in tests/test_evaluate.py), then evaluate_fid.py on the device and on the CPU.
import json, subprocess, sys
from pathlib import Path
import numpy as np
from evaluation.features import save_random_inception
work, device = Path(sys.argv[1]), sys.argv[2]
save_random_inception(work / "inception.pth")
rng = np.random.default_rng(0)
np.savez(work / "ref.npz", arr_0=rng.integers(0, 256, (200, 64, 64, 3), dtype=np.uint8))
np.savez(work / "sample.npz", arr_0=rng.integers(0, 200, (200, 64, 64, 3), dtype=np.uint8))
res = {}
for dev in dict.fromkeys([device, "cpu"]):
    cmd = [sys.executable, "evaluate_fid.py", str(work / "ref.npz"), str(work / "sample.npz"), "--device", dev,
           "--weights", str(work / "inception.pth"), "--batch-size", "100", "--json", str(work / f"{dev}.json")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    print(dev, "exit", r.returncode, r.stdout.strip().splitlines()[-1:], r.stderr.strip().splitlines()[-2:])
    if r.returncode == 0:
        res[dev] = json.loads((work / f"{dev}.json").read_text())["metrics"]
if len(res) == 2:
    for k in res["cpu"]:
        a, b = res[device][k], res["cpu"][k]
        print(f"{k:12s} {device} {a:.6g}  cpu {b:.6g}  rel diff {abs(a - b) / max(abs(b), 1e-12):.2e}")
PY

config=configs/fashion_vit-t4_x0_min_snr.toml
score() {  # score $1's new checkpoints until the deadline, then delete the scored ones (ViT-S/4's are 0.7 GB)
  local run=$1 name=$(basename $1) left=$((deadline - SECONDS))
  [ $left -gt 5 ] || return 0
  compgen -G "$run/checkpoints/*.pt" > /dev/null || return 0  # scored ones are deleted: none left, nothing to start
  timeout $left python3 tools/convergence.py $name=$run --out $work/score-$name \
    --num-samples $NUM_SAMPLES --batch-size 1000 --steps 10 --precision tf32 >> "$out/score-$name.txt" 2>&1
  for c in $run/checkpoints/*.pt; do
    [ -e "$c" ] && grep -q "^$name,$((10#$(basename $c .pt)))," $work/score-$name/curves.csv 2>/dev/null && rm -f "$c"
  done
}
pids=()
for seed in $SEEDS; do for w in const min_snr; do
  name=x0-$w-s$seed
  timeout $((deadline - SCORE_S - SECONDS)) python3 train.py --config $config --model $MODEL --weighting $w \
    --seed $seed --global-batch-size $BATCH --max-steps 100000 --ckpt-every $CKPT_EVERY --keep-checkpoints 0 \
    --log-every 500 \
    --num-workers 1 --results-dir $work/runs/$name $EXTRA > "$out/train-$name.txt" 2>&1 &
  pids+=($!)
  (until [ -e $work/stop ]; do score $work/runs/$name; sleep 5; done; score $work/runs/$name) &
done; done
wait "${pids[@]}"
touch $work/stop
for r in $work/runs/*; do
  cp $r/log.txt "$out/log-$(basename $r).txt" 2>/dev/null
  tail -1 $r/log.txt 2>/dev/null | sed "s/^/$(basename $r): /" | tee -a "$out/steps.txt"
done
wait
mkdir -p $work/all && head -1 -q $work/score-*/curves.csv 2>/dev/null | head -1 > $work/all/curves.csv
for f in $work/score-*/curves.csv; do tail -n +2 $f >> $work/all/curves.csv; done
python3 tools/curves.py $work/all/curves.csv --metric fd_fashion --only x0-const,x0-min_snr --out $work/all/curves.png \
  --title "Fashion-MNIST, $MODEL, GPU: FD-fashion of the EMA weights" 2>&1 | tee "$out/speedups-stdout.txt"
cp $work/all/curves.csv $work/all/curves.png $work/all/curves-speedup.png $out/speedups-stdout.txt "$out/steps.txt" "$final/" 2>/dev/null
tar czf "$final/logs.tgz" -C "$out" . && ls -la "$final"
