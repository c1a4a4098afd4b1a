"""Feature extractors: a registry from name to where the weights come from, how to build it, what it returns.

An extractor is an ``nn.Module`` mapping uint8 images [B, H, W, C] (C = 1 or 3, any size, on its device) to a dict
of float [B, D] features, some of:

- ``"pool"``: for the Fréchet distance (FID) and precision/recall;
- ``"spatial"``: for the spatial Fréchet distance (sFID);
- ``"logits"``: for the Inception Score.

Adding one is a module class plus an ``EXTRACTORS`` entry naming its weights lookup and feature sizes.
"""

import http.client
import io
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from training.atomic import atomic_write
from training.checkpoint import load_weights_only

from . import fashion


def read_state_dict_bytes(path: Path) -> bytes:
    """The bytes of a weights file, after checking that ``torch.load(weights_only=True)`` reads them: a file that
    would need arbitrary pickled code, or a truncated one, raises ValueError with one clear line."""
    data = path.read_bytes()
    load_weights_only(io.BytesIO(data), path)
    return data


def download(url: str, dst: Path, timeout: float = 30) -> None:
    """Fetch url into dst. The whole body is read before dst is written (atomically), so a failed download leaves
    nothing behind. Raises OSError (refused, timed out: ``timeout`` seconds without a byte) or
    ``http.client.IncompleteRead`` (cut off before its Content-Length)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data = response.read()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dst) as tmp:
        tmp.write_bytes(data)


def find_inception_weights(weights: str | None) -> Path:
    """--weights PATH; else torch's hub cache, where torch-fidelity's own download puts the file
    (``torch.hub.get_dir()/checkpoints``, under $TORCH_HOME); else a download from torch-fidelity's release into it."""
    if weights is not None:
        if not Path(weights).is_file():
            raise ValueError(f"--weights {weights} does not exist")
        return Path(weights)
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3  # importing torch_fidelity takes 3 s

    cached = Path(torch.hub.get_dir()) / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[1]
    if not cached.is_file():
        try:
            download(URL_INCEPTION_V3, cached)
        except (OSError, http.client.HTTPException) as err:
            raise ValueError(
                f"Inception weights {cached.name} are not in {cached.parent} and the download from "
                f"{URL_INCEPTION_V3} failed ({getattr(err, 'reason', err)}); fetch that file and pass --weights PATH"
            ) from None
    return cached


class InceptionV3(nn.Module):
    """The TF Inception-v3 of the 2015-12-05 graph, as torch-fidelity's ``inception-v3-compat``: images are resized
    to 299×299 inside the network (TF1 bilinear), grey ones repeated to 3 channels.

    Features, as ADM's evaluator reads them from the TF graph:

    - pool: ``pool_3``, 2048-d;
    - spatial: ``mixed_6/conv``, the first 7 of its 192 channels at 17×17, flattened in HWC order (2023-d);
    - logits: ``pool_3 · W`` of the 1008-way ``softmax`` layer without its bias (ADM's Inception Score input).

    Which module is ``mixed_6/conv``: the TF graph names its Inception blocks ``mixed, mixed_1, …, mixed_10``, in
    torchvision's names Mixed_5b, 5c, 5d, 6a, 6b, 6c, 6d, 6e, 7a, 7b, 7c; so ``mixed_6`` is Mixed_6d (the third
    17×17 factorised-7×7 block, after the reduction Mixed_6a = ``mixed_3``, then ``mixed_4`` = 6b and ``mixed_5`` =
    6c), and inside a block ``conv`` is the 1×1 branch (``tower``, ``tower_1``, ``tower_2`` are the others).
    torch-fidelity's weight converter (utils/util_convert_inception_weights.py in its repository) maps
    ``mixed_6/conv/conv2d_params`` and ``mixed_6/conv/batchnorm`` to ``Mixed_6d.branch1x1.conv`` and ``.bn``. Each
    TF layer is the ops ``<name>/Conv2D``, ``<name>/batchnorm`` and then ``<name>`` itself, the activation that the
    block concatenates: the ReLU output, which is what ``BasicConv2d`` returns. So a forward hook on
    ``Mixed_6d.branch1x1`` yields ``mixed_6/conv:0`` (here NCHW; ADM slices TF's NHWC tensor to ``[..., :7]``).
    """

    def __init__(self, weights: Path):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        super().__init__()
        data = read_state_dict_bytes(weights)
        try:
            # torch-fidelity loads the weights itself, with weights_only=False; it is handed the very bytes that
            # passed weights_only=True above, so it unpickles nothing beyond tensors.
            self.net = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=io.BytesIO(data)
            )
        except RuntimeError as err:
            raise ValueError(
                f"{weights} does not hold inception-v3-compat weights ({str(err).splitlines()[0]})"
            ) from None
        self.net.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)
        self._spatial: torch.Tensor | None = None

    def _keep_spatial(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        self._spatial = output[:, :7]  # [B, 7, 17, 17]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images.permute(0, 3, 1, 2)  # [B, C, H, W] uint8
        pool, logits = self.net(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)
        spatial = self._spatial.permute(0, 2, 3, 1).flatten(1).float()  # HWC order, as TF's NHWC reshape
        self._spatial = None
        return {"pool": pool, "spatial": spatial, "logits": logits}


def save_random_inception(path: Path, seed: int = 0) -> Path:
    """Save a randomly initialised ``inception-v3-compat`` state dict to ``path``: the stand-in for tests and
    benchmarks where the real weights cannot be downloaded. He-initialised convolutions keep the activations'
    scale through the 94 layers; the logits layer is drawn with std 0.1. Same architecture, same cost, no meaning."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    empty = path.with_name(f".{path.name}.empty")
    torch.save({}, empty)
    load = FeatureExtractorInceptionV3.load_state_dict
    FeatureExtractorInceptionV3.load_state_dict = lambda self, state: None  # its constructor insists on weights
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)
    finally:
        FeatureExtractorInceptionV3.load_state_dict = load
        empty.unlink()
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
    nn.init.normal_(net.fc.weight, std=0.1, generator=g)
    torch.save(net.state_dict(), path)
    return path


@dataclass(frozen=True)
class Extractor:
    """A registered extractor: ``find_weights(--weights or None) -> Path``, ``build(path) -> nn.Module``, and the
    size of each feature it returns."""

    find_weights: Callable[[str | None], Path]
    build: Callable[[Path], nn.Module]
    dims: dict[str, int]


EXTRACTORS = {
    "inception": Extractor(find_inception_weights, InceptionV3, {"pool": 2048, "spatial": 17 * 17 * 7, "logits": 1008}),
    "fashion": Extractor(
        fashion.find_weights,
        fashion.build,
        {"pool": fashion.FashionClassifier.feature_dim, "spatial": fashion.FashionClassifier.spatial_dim, "logits": 10},
    ),
}


def get_extractor(name: str) -> Extractor:
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor '{name}'; valid: {', '.join(EXTRACTORS)}")
    return EXTRACTORS[name]
