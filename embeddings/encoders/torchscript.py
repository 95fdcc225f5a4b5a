"""`torchscript:PATH` — a user's perception model exported with torch.jit (the DESIGN.md encoder contract).

Metadata is read from the TorchScript extra file `edgemine.json` if present (`input_size`, `class_names`);
`edgemine train-baseline` writes it. The encoder id carries the file's content hash, so two different
models never share outputs, whatever their file names.
"""

from __future__ import annotations

import json
import os

import torch

from edgemine.embeddings.encoders.base import Encoder, file_digest
from edgemine.errors import ConfigError, InputNotFoundError

META_FILE = "edgemine.json"


def read_metadata(path: str | os.PathLike[str]) -> dict[str, object]:
    """The `edgemine.json` stored inside a TorchScript file, or {} when it has none."""
    extra = {META_FILE: ""}
    torch.jit.load(os.fspath(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[META_FILE]) if extra[META_FILE] else {}


def load(arg: str, *, input_size: int | None, device: str, autocast: bool) -> Encoder:
    if not arg:
        raise ConfigError("encoder 'torchscript:' needs a path: torchscript:/path/to/model.pt")
    path = os.path.expanduser(arg)
    if not os.path.isfile(path):
        raise InputNotFoundError(f"torchscript model {path!r} does not exist")
    digest = file_digest(path)
    extra = {META_FILE: ""}
    try:
        module = torch.jit.load(path, map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"torchscript:{path}: not a loadable TorchScript file: {exc}") from exc
    meta = json.loads(extra[META_FILE]) if extra[META_FILE] else {}
    size = input_size or meta.get("input_size")
    if not size:
        raise ConfigError(
            f"torchscript:{path} stores no input size; pass input_size (the job spec's `input_size`, "
            "`--input-size` on the CLI)"
        )
    names = meta.get("class_names")
    return Encoder(module, encoder_id=f"torchscript:sha256-{digest}", input_size=int(size), device=device,
                   autocast=autocast, class_names=names if isinstance(names, list) else None)
