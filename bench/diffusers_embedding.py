"""What diffusers' stock DiT timestep features do to a trained model: x0 error per t and FD-fashion of samples.

    python bench/diffusers_embedding.py --ckpt RUN/checkpoints/0003000.pt

Exports the checkpoint (a DiT trained on the embedded default) with tools/export_diffusers.py, loads it in
diffusers twice, stock and with DiT's frequencies (models.diffusers_export.use_dit_frequencies), and compares
both with our model: the unweighted x0-MSE on 1000 Fashion-MNIST test images at fixed t and noise, then
FD-fashion and label accuracy of --num-samples EDM Heun samples (the same seeds and labels for all three).
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from diffusion import classifier_free_guidance, create_diffusion, edm_timesteps, sample_heun
from evaluation import evaluate
from evaluation.denoiser import held_out
from evaluation.fashion import label_accuracy
from models.diffusers_export import use_dit_frequencies
from sampling import PerSampleNoise, class_labels, load_for_sampling, quantize
from tools.export_diffusers import export

ROOT = Path(__file__).resolve().parents[1]

TS = (0, 100, 300, 500, 700, 900, 999)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--steps", type=int, default=10, help="Heun steps")
    p.add_argument("--cfg-scale", type=float, default=1.5)
    args = p.parse_args()
    torch.set_flush_denormal(True)
    from diffusers import DiTTransformer2DModel

    ours, spec = load_for_sampling(args.ckpt)
    d = create_diffusion(
        noise_schedule=spec.noise_schedule, prediction=spec.prediction, learn_sigma=spec.model_kwargs["learn_sigma"]
    )
    with tempfile.TemporaryDirectory() as tmp:
        export(args.ckpt, Path(tmp) / "out")
        load = lambda: DiTTransformer2DModel.from_pretrained(Path(tmp) / "out", subfolder="transformer").eval()  # noqa: E731
        stock, patched = load(), use_dit_frequencies(load())
    nets = {"ours": ours}
    for name, tr in (("diffusers, DiT frequencies", patched), ("diffusers, stock", stock)):
        nets[name] = lambda x, t, y, tr=tr: tr(x, timestep=t, class_labels=y).sample

    x0, y = held_out(None, 1000)
    x0 = spec.from_data(x0)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    print("x0-MSE at t = " + ", ".join(map(str, TS)))
    with torch.no_grad():
        for name, net in nets.items():
            errs = []
            for t in TS:
                tt = torch.full((len(x0),), t)
                xt = d.q_sample(x0, tt, noise)
                pred, _, _ = d.predict(net, xt, tt, {"y": y})
                errs.append(((pred - x0) ** 2).mean().item())
            print(f"  {name:28s} " + " ".join(f"{e:.4f}" for e in errs))

    print(f"FD-fashion and label accuracy, {args.num_samples} samples, Heun-{args.steps}, cfg {args.cfg_scale}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, net in nets.items():
            guided = classifier_free_guidance(net, args.cfg_scale, spec.null_class)
            images, labels = [], []
            for start in range(0, args.num_samples, 250):
                stop = min(start + 250, args.num_samples)
                noise_fn = PerSampleNoise(0, start, stop)
                xs = noise_fn(torch.empty(stop - start, *x0.shape[1:]))
                ys = class_labels(start, stop, spec.num_classes)
                with torch.no_grad():
                    images.append(
                        quantize(spec.to_data(sample_heun(guided, xs, edm_timesteps(d, args.steps), d, {"y": ys})))
                    )
                labels.append(ys.numpy())
            npz = Path(tmp) / "s.npz"
            np.savez(npz, arr_0=np.concatenate(images), arr_1=np.concatenate(labels))
            fd = evaluate("fashion-test", npz, "fid", extractor="fashion")["metrics"]["fd_fashion"]
            acc = label_accuracy(np.concatenate(images), np.concatenate(labels))
            print(f"  {name:28s} FD-fashion {fd:7.2f}  label accuracy {acc:.1%}")


if __name__ == "__main__":
    main()
