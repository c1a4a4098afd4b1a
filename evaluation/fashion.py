"""A small Fashion-MNIST classifier whose penultimate layer is the feature space of FD-fashion.

Inception features mean little for 28×28 grey clothes, so on the embedded default we report the Fréchet distance
in this network's 128-d feature space as ``fd_fashion``, never as FID. The weights are trained by
``tools/train_fashion_classifier.py``, committed beside this file, and checked against ``WEIGHTS_SHA256``.
"""

import hashlib
import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.atomic import atomic_write

WEIGHTS = Path(__file__).with_name("fashion_classifier.pt")
REFERENCE = "fashion-test"  # evaluate_fid.py's name for the 10K test images, padded to 32×32 as in training
WEIGHTS_SHA256 = "154cebe1fd05245724accd48d4fb4655f6d4de5ce48cebb7fcf2363993d23e0d"


class FashionClassifier(nn.Module):
    """Three conv stages and a 128-d feature layer: uint8 [B, 32, 32, 1] (or 28×28, padded) -> {"pool", "logits"}."""

    feature_dim = 128
    spatial_channels = 7  # as sFID keeps the first 7 channels of Inception's mixed_6/conv
    spatial_dim = spatial_channels * 8 * 8

    def __init__(self, num_classes: int = 10):
        super().__init__()

        def stage(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)
            )

        self.body = nn.Sequential(stage(1, 32), stage(32, 64), stage(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.features = nn.Sequential(nn.Linear(128, self.feature_dim), nn.ReLU())
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    @staticmethod
    def to_input(images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 1] (H = W = 28 or 32) -> float [B, 1, 32, 32] in [-1, 1], as the training data."""
        if images.shape[-1] != 1:
            raise ValueError(f"the Fashion-MNIST classifier takes grey images [B, H, W, 1], got {list(images.shape)}")
        x = images.permute(0, 3, 1, 2).float() / 127.5 - 1
        pad = (32 - x.shape[-1]) // 2
        return nn.functional.pad(x, (pad,) * 4, value=-1.0) if pad else x

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x float [B, 1, 32, 32] in [-1, 1] -> (logits [B, 10], features [B, 128]). The features are taken before
        the ReLU: after it, units that never fire would make every covariance singular."""
        logits, h, _ = self._stages(x)
        return logits, h

    def _stages(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, pre-ReLU features, the second stage's [B, 64, 8, 8] map)."""
        early = self.body[:2](x)
        linear, relu = self.features
        h = linear(self.body[2:](early))  # [B, 128]
        return self.classifier(relu(h)), h, early

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"pool": the 128-d features (global shape), "spatial": the second stage's first 7 channels at 8×8, in
        HWC order (448-d; local detail, the analogue of sFID's mixed_6/conv), "logits"}."""
        logits, h, early = self._stages(self.to_input(images))
        spatial = early[:, : self.spatial_channels].permute(0, 2, 3, 1).flatten(1)
        return {"pool": h.double(), "spatial": spatial.double(), "logits": logits.double()}


def find_weights(weights: str | None) -> Path:
    """--weights PATH (a classifier you trained yourself) or the committed one."""
    if weights is not None and not Path(weights).is_file():
        raise ValueError(f"--weights {weights} does not exist")
    return Path(weights) if weights is not None else WEIGHTS


def build(path: Path) -> FashionClassifier:
    """The registry's constructor: the committed file is checked against its SHA-256, others are not."""
    return load_fashion_classifier(path, WEIGHTS_SHA256 if path.resolve() == WEIGHTS.resolve() else None)


def reference_npz(cache: Path | None = None) -> Path:
    """The Fashion-MNIST test split as an ADM-style .npz (arr_0 uint8 [10000, 32, 32, 1] on a black border, as the
    training data; arr_1 labels), written once into ``cache`` (default ~/.cache/minsnr-dit), atomically."""
    from data.fashion_mnist import load_arrays, pad_to_32

    cache = cache or Path.home() / ".cache" / "minsnr-dit"
    path = cache / "fashion-test-32.npz"
    if not path.exists():
        images, labels = load_arrays("test")
        padded = pad_to_32(images)[..., None]  # [N, 32, 32, 1]
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp, tmp.open("wb") as f:
            np.savez(f, arr_0=padded, arr_1=labels)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_fashion_classifier(
    path: str | Path = WEIGHTS, expected_sha256: str | None = WEIGHTS_SHA256, device: torch.device | str = "cpu"
) -> FashionClassifier:
    """The classifier at ``path`` (default: the committed one) in eval mode. The file must hash to
    ``expected_sha256`` (None skips the check, for one you trained yourself) and is read with ``weights_only=True``.
    Raises ValueError with one line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"Fashion-MNIST classifier weights {path} not found; train them with tools/train_fashion_classifier.py"
        )
    data = path.read_bytes()
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise ValueError(
            f"{path} does not match its SHA-256 ({expected_sha256[:12]}…): the file is corrupt or was "
            "replaced; restore it with git checkout or retrain with tools/train_fashion_classifier.py"
        )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt files fail in many ways
        raise ValueError(
            f"cannot read {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    model = FashionClassifier()
    model.load_state_dict(state)
    return model.to(device).eval().requires_grad_(False)


@torch.no_grad()
def label_accuracy(images: np.ndarray, labels: np.ndarray, model: FashionClassifier | None = None) -> float:
    """The fraction of uint8 images [N, H, W, 1] that the classifier (default: the committed one) assigns to
    ``labels`` [N]: how recognisable class-conditional samples are."""
    model = model or load_fashion_classifier()
    batches = np.array_split(images, max(1, len(images) // 500))
    logits = torch.cat([model(torch.from_numpy(b))["logits"] for b in batches])
    return float((logits.argmax(1).numpy() == np.asarray(labels)).mean())
