"""Feature-extraction speed of evaluate_fid.py's extractors, against a matmul in the same process.

    python bench/evaluate.py                                   # Inception, 256×256 uint8 (ImageNet samples)
    python bench/evaluate.py --extractor fashion --image-size 32 --batch 500

The Inception network is torch-fidelity's inception-v3-compat with random weights unless --weights names the real
file: the cost is the same. It reports images/s of the extractor's forward (the uint8 batch already on the device;
resizing to 299 happens inside the network), its multiply-adds per image, the achieved FLOP/s and their ratio to
a dense fp32 matmul (1024² on the CPU, 8192² on CUDA), and how long 50,000 images (ADM's protocol) would take.
"""

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.train_step import append_jsonl, matmul_flops_per_s, time_calls
from evaluation.features import EXTRACTORS, save_random_inception
from training import precision


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--extractor", choices=EXTRACTORS, default="inception")
    p.add_argument("--weights", help="the extractor's weights (default: random Inception / the committed classifier)")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--batches", type=int, default=5, help="timed batches (after 1 untimed)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=Path, help="append the result as one JSON line to this file")
    args = p.parse_args()
    device = torch.device(args.device)
    precision.configure(device, "fp32")

    spec = EXTRACTORS[args.extractor]
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if weights is None and args.extractor == "inception":
            weights = str(save_random_inception(Path(tmp) / "inception.pth"))
        model = spec.build(spec.find_weights(weights)).to(device).eval()
    shape = (args.batch, args.image_size, args.image_size, args.channels)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)

    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            model(images[:1])
        macs = counter.get_total_flops() // 2
        times = time_calls(lambda: model(images), device, warmup=1, iters=args.batches)
    per_s = args.batch / statistics.median(times)
    m = 1024 if device.type == "cpu" else 8192
    matmul = matmul_flops_per_s(m, m, m, torch.float32, device, 10)
    result = {
        "extractor": args.extractor,
        "input": list(shape[1:]),
        "batch": args.batch,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{torch.get_num_threads()}",
        "torch": torch.__version__,
        "images_per_s": per_s,
        "forward_gmacs_per_image": macs / 1e9,
        "achieved_tflops": 2 * macs * per_s / 1e12,
        f"matmul_{m}_tflops": matmul / 1e12,
        "ratio_to_matmul": 2 * macs * per_s / matmul,
        "minutes_per_50k": 50_000 / per_s / 60,
    }
    print(
        f"{args.extractor} on {result['device']}, {shape[1]}×{shape[2]}×{shape[3]} uint8, batch {args.batch}: "
        f"{per_s:.1f} images/s ({macs / 1e9:.2f} GMACs/image, {result['achieved_tflops']:.3f} TFLOP/s = "
        f"{result['ratio_to_matmul']:.2f} of a {m}² fp32 matmul); "
        f"50K images in {result['minutes_per_50k']:.1f} min"
    )
    append_jsonl(args.json, result)


if __name__ == "__main__":
    main()
