"""Train the Fashion-MNIST classifier behind FD-fashion and commit-ready its weights (a few CPU minutes).

    python tools/train_fashion_classifier.py        # writes evaluation/fashion_classifier.{pt,json}

Adam, batch 128, random horizontal flips, fixed seed. It reports the 10K test-set accuracy, saves the weights,
writes their SHA-256 into ``evaluation/fashion.py`` (the loader refuses any other file) and records the run in
``evaluation/fashion_classifier.json``.
"""

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.fashion_mnist import load_arrays
from evaluation.fashion import WEIGHTS, FashionClassifier, sha256
from training.checkpoint import save_atomic


def as_input(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 1, 32, 32] in [-1, 1], as the classifier and the diffusion data see it."""
    return FashionClassifier.to_input(torch.from_numpy(images)[..., None])


@torch.no_grad()
def accuracy(model: FashionClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(
        (model.logits_and_features(xb)[0].argmax(1) == yb).sum().item()
        for xb, yb in zip(x.split(1000), y.split(1000), strict=True)
    )
    return correct / len(y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=WEIGHTS)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_flush_denormal(True)
    x_train, y_train = (torch.as_tensor(a) for a in load_arrays("train"))
    x_test, y_test = (torch.as_tensor(a) for a in load_arrays("test"))
    x_train, x_test = as_input(x_train.numpy()), as_input(x_test.numpy())

    model = FashionClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps = args.epochs * (len(y_train) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    tic = time.time()
    bar = tqdm(total=steps, desc="classifier")
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(y_train))
        for idx in order[: len(order) // 128 * 128].split(128):
            xb, yb = x_train[idx], y_train[idx]
            xb = torch.where(torch.rand(len(xb), 1, 1, 1) < 0.5, xb.flip(-1), xb)
            loss = torch.nn.functional.cross_entropy(model.logits_and_features(xb)[0], yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    bar.close()
    minutes = (time.time() - tic) / 60
    test_acc = accuracy(model, x_test, y_test)
    print(
        f"test accuracy {test_acc:.4f} after {args.epochs} epochs ({minutes:.1f} min on {torch.get_num_threads()} "
        f"threads)"
    )

    save_atomic(model.state_dict(), args.out)
    digest = sha256(args.out)
    record = {
        "test_accuracy": test_acc,
        "epochs": args.epochs,
        "lr": args.lr,
        "seed": args.seed,
        "train_minutes": round(minutes, 2),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "sha256": digest,
        "bytes": args.out.stat().st_size,
    }
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    if args.out.resolve() == WEIGHTS.resolve():
        source = Path(__file__).resolve().parents[1] / "evaluation" / "fashion.py"
        text = re.sub(r'WEIGHTS_SHA256 = "[^"]*"', f'WEIGHTS_SHA256 = "{digest}"', source.read_text())
        source.write_text(text)
    print(f"wrote {args.out} ({record['bytes'] / 1e6:.2f} MB, sha256 {digest})")


if __name__ == "__main__":
    main()
