"""Export a DiT checkpoint (ours, or a released DiT state dict) in diffusers' layout.

    python tools/export_diffusers.py RUN/checkpoints/0400000.pt exports/dit-b2
    python tools/export_diffusers.py DiT-XL-2-256x256.pt exports/dit-xl2 --model DiT-XL/2

writes OUT_DIR/transformer (``DiTTransformer2DModel.from_pretrained(OUT_DIR, subfolder="transformer")``),
OUT_DIR/scheduler (a DDIMScheduler on the checkpoint's schedule and target) and OUT_DIR/export.json (the data
settings diffusers has no place for: decoder, latent scale, normalisation). The EMA weights by default.

diffusers' DiT computes its timestep features with other frequencies than DiT; load with
``models.diffusers_export.use_dit_frequencies`` (docs/export.md) to get our model's outputs exactly.
The paper's ViT has no diffusers counterpart and is not exported.
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

from data.transform import transform_record
from models.diffusers_export import scheduler_config, transformer_config, transformer_state_dict
from sampling import load_for_sampling
from training.cli import OneLineParser, fail

ROOT = Path(__file__).resolve().parents[1]


def export(ckpt: str, out_dir: Path, weights: str = "ema", model_name: str | None = None) -> None:
    """Raises ValueError (one line) for anything that cannot be exported; writes out_dir whole or not at all."""
    from diffusers import DDIMScheduler, DiTTransformer2DModel

    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} exists and is not empty; choose another OUT_DIR or delete it")
    model, spec = load_for_sampling(ckpt, model_name, weights)
    if not spec.model.startswith("DiT"):
        raise ValueError(f"{ckpt} is a {spec.model}: the paper's ViT has no diffusers counterpart; only DiT exports")
    if spec.model_kwargs.get("qk_norm"):
        raise ValueError(f"{ckpt} was trained with --qk-norm, which diffusers' DiT does not have")
    transformer = DiTTransformer2DModel(**transformer_config(model))
    transformer.load_state_dict(transformer_state_dict(model), strict=True)
    if not torch.allclose(transformer.pos_embed.pos_embed, model.pos_embed, atol=1e-6):
        raise ValueError(f"{ckpt} holds position embeddings other than DiT's sin-cos table, which diffusers rebuilds")
    record = {
        "source": str(Path(ckpt).resolve()),
        "model": spec.model,
        "weights": weights,
        "prediction": spec.prediction,
        "noise_schedule": spec.noise_schedule,
        "decoder": spec.decoder,
        "data_transform": transform_record(spec.transform),
        "null_class": spec.null_class,
        "timestep_frequencies": "DiT's: load with models.diffusers_export.use_dit_frequencies",
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        transformer.save_pretrained(tmp / "transformer")
        config = scheduler_config(spec.prediction, spec.noise_schedule, spec.diffusion_steps)
        DDIMScheduler.from_config(config).save_pretrained(tmp / "scheduler")
        (tmp / "export.json").write_text(json.dumps(record, indent=1))
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)  # the whole folder appears at once
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main() -> None:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt", metavar="CKPT", help="our checkpoint, or a released DiT state dict (needs --model)")
    p.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="the folder to write; must not exist or be empty")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help="our checkpoints hold both")
    p.add_argument("--model", help="the model name of a released DiT state dict, e.g. DiT-XL/2")
    args = p.parse_args()
    try:
        export(args.ckpt, args.out_dir, args.weights, args.model)
    except ValueError as err:
        fail("export_diffusers.py", err)
    print(f"wrote {args.out_dir}/transformer, {args.out_dir}/scheduler and {args.out_dir}/export.json")


if __name__ == "__main__":
    main()
