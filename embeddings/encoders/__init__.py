"""Encoders, chosen by a spec string: `builtin`, `builtin:FIT.npz`, `torchscript:PATH`, `torchvision:NAME:PATH`,
`efficientnet_lite0[:SIZE]` (ImageNet EfficientNet-Lite0, weights from an installed package).

Adding an encoder kind is adding one module with a `load(arg, *, input_size, device, autocast)` function
and one line in `ENCODER_KINDS`. Modules load lazily, so importing this package does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from edgemine.errors import ConfigError

if TYPE_CHECKING:
    from edgemine.embeddings.encoders.base import Encoder

DEFAULT_ENCODER = "builtin"

# spec prefix -> module with `load(arg: str, *, input_size, device, autocast) -> Encoder`
ENCODER_KINDS: dict[str, str] = {
    "builtin": "edgemine.embeddings.encoders.builtin",
    "torchscript": "edgemine.embeddings.encoders.torchscript",
    "torchvision": "edgemine.embeddings.encoders.torchvision_encoder",
    "efficientnet_lite0": "edgemine.embeddings.encoders.efficientnet",
}


def parse_spec(spec: str) -> tuple[str, str]:
    """`"kind:arg"` -> (kind, arg); `"builtin"` -> ("builtin", ""). Unknown kinds list the valid ones."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"encoder={spec!r} is empty; valid kinds are {sorted(ENCODER_KINDS)}")
    kind, _, arg = spec.strip().partition(":")
    if kind not in ENCODER_KINDS:
        raise ConfigError(
            f"encoder={spec!r}: unknown kind {kind!r}; valid kinds are {sorted(ENCODER_KINDS)} "
            "(e.g. builtin, torchscript:model.pt, torchvision:resnet18:weights.pth, efficientnet_lite0:128)"
        )
    return kind, arg


def load_encoder(
    spec: str = DEFAULT_ENCODER,
    *,
    input_size: int | None = None,
    device: str = "cpu",
    autocast: bool | None = None,
) -> Encoder:
    """Load the encoder `spec` names, on `device` (cpu | cuda | auto; see embeddings.device).

    `input_size` overrides the size stored with the model (TorchScript) or the kind's default.
    `autocast` defaults to fp16 autocast on CUDA and is ignored on CPU.
    """
    from edgemine.embeddings.device import resolve_device

    kind, arg = parse_spec(spec)
    if input_size is not None and input_size < 16:
        raise ConfigError(f"input_size={input_size} must be >= 16 pixels")
    plan = resolve_device(device, autocast=autocast)
    module = importlib.import_module(ENCODER_KINDS[kind])
    encoder: Encoder = module.load(arg, input_size=input_size, device=plan.device, autocast=plan.autocast)
    return encoder


__all__ = ["DEFAULT_ENCODER", "ENCODER_KINDS", "load_encoder", "parse_spec"]
