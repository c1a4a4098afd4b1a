"""Print the README's model table: every registry name with its parameters and forward Gflops (multiply-adds).

Counted for ImageNet-256 latents (input 32, 4 channels, 1000 classes); DiT with learned sigma as released, the
ViT without as in the paper. Models are built on the meta device, so this takes seconds.
"""

import torch

from models import ALL_MODELS, forward_macs


def main() -> None:
    print("| model | parameters | Gflops |")
    print("|---|---:|---:|")
    for name, build in ALL_MODELS.items():
        with torch.device("meta"):
            model = build(input_size=32, in_channels=4, num_classes=1000, learn_sigma=name.startswith("DiT"))
        params = sum(p.numel() for p in model.parameters())
        print(f"| `{name}` | {params:,} | {forward_macs(model) / 1e9:.2f} |")


if __name__ == "__main__":
    main()
