"""`torchvision:NAME:PATH` — a torchvision classification architecture with weights from a local file.

Nothing is downloaded: PATH is a `state_dict` saved with `torch.save(model.state_dict(), PATH)`. The
embedding is the input of the model's last Linear layer (the pooled features for ResNets, the penultimate
layer for MobileNets and EfficientNets); its output is the logits. Frames are normalised with the ImageNet
mean and std inside the module, so the contract input stays RGB in [0, 1]. Default input size 224.
"""

from __future__ import annotations

import difflib
import os
import sys
import types

import torch
from torch import nn

from edgemine.embeddings.encoders.base import Encoder, file_digest
from edgemine.errors import ConfigError, InputNotFoundError, MissingDependencyError

DEFAULT_INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def import_torchvision() -> types.ModuleType:
    """Import torchvision, working around a broken C extension; MissingDependencyError if it is absent."""
    try:
        import torchvision
    except ImportError as exc:
        raise MissingDependencyError(
            "torchvision:NAME encoders need torchvision; install it with: pip install 'edgemine[vision]'"
        ) from exc
    except RuntimeError as exc:
        if "does not exist" not in str(exc):
            raise
        # PyPI's torchvision wheel ships a C extension built for another torch build; beside the CPU torch
        # wheel its custom ops (torchvision::nms, ...) never register, and importing torchvision fails in
        # torchvision._meta_registrations, which adds fake-tensor kernels for those ops. The model zoo uses
        # none of them, so a placeholder for that one module lets `torchvision.models` import and run.
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
        import torchvision
    return torchvision


def _last_linear(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ConfigError(f"{type(model).__name__} has no Linear classifier head to take embeddings from")
    return names[-1]


def _set_submodule(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, leaf = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, new)


class TorchvisionEncoderModule(nn.Module):
    """Normalise, run the trunk (the model with its last Linear replaced by Identity), then the head."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        head_name = _last_linear(model)
        self.head = model.get_submodule(head_name)
        _set_submodule(model, head_name, nn.Identity())
        self.trunk = model
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.trunk((x - self.mean) / self.std).flatten(1)
        return emb, self.head(emb)


def build_model(name: str, state_dict: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """torchvision model `name` with random weights, sized to `state_dict`'s classifier if given."""
    tv = import_torchvision()
    available = tv.models.list_models(module=tv.models)
    if name not in available:
        close = difflib.get_close_matches(name, available, n=5)
        hint = f"; did you mean {close}?" if close else ""
        raise ConfigError(f"torchvision model {name!r} is not a torchvision classification model{hint} "
                          f"({len(available)} exist; see torchvision.models.list_models())")
    model = tv.models.get_model(name, weights=None)
    if state_dict is not None:
        key = f"{_last_linear(model)}.weight"
        if key in state_dict and state_dict[key].shape[0] != model.get_submodule(key[:-7]).out_features:
            model = tv.models.get_model(name, weights=None, num_classes=int(state_dict[key].shape[0]))
    return model


def load(arg: str, *, input_size: int | None, device: str, autocast: bool) -> Encoder:
    name, sep, path = arg.partition(":")
    if not name or not sep or not path:
        raise ConfigError(
            f"encoder 'torchvision:{arg}' needs a model name and a local weights file: "
            "torchvision:NAME:PATH, e.g. torchvision:resnet18:/models/resnet18.pth (nothing is downloaded)"
        )
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise InputNotFoundError(f"torchvision weights file {path!r} does not exist")
    import_torchvision()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types; the message names the file
        raise ConfigError(f"torchvision weights {path!r} are not a loadable state_dict: {exc}") from exc
    if not isinstance(obj, dict):
        raise ConfigError(f"torchvision weights {path!r} hold a {type(obj).__name__}, expected a state_dict")
    model = build_model(name, obj)
    try:
        model.load_state_dict(obj, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"weights {path!r} do not fit torchvision model {name!r}: {exc}") from exc
    return Encoder(TorchvisionEncoderModule(model), encoder_id=f"torchvision:{name}:sha256-{file_digest(path)}",
                   input_size=input_size or DEFAULT_INPUT_SIZE, device=device, autocast=autocast)
