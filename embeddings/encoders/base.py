"""The encoder object every encoder kind returns: a torch module behind a numpy-in, numpy-out `embed`.

Contract (DESIGN.md, "Encoder"): the module's forward takes float32 `[B, 3, H, W]` RGB in [0, 1] and returns
`embedding [B, D]` or `(embedding [B, D], logits [B, C])`. `Encoder` checks that once with a probe batch at
load time (so a bad model fails before a job starts, naming what it returned) and reports `dim` and
`n_classes` from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence

import numpy as np
import torch

from edgemine.embeddings.decode import MIN_SIDE
from edgemine.errors import ConfigError, InputNotFoundError


def file_digest(path: str | os.PathLike[str], *, length: int = 16) -> str:
    """Short sha256 of a weights file's bytes: part of every encoder id, so different weights never mix."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise InputNotFoundError(f"weights file {p!r} does not exist")
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def split_output(out: object, *, source: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(embedding, logits or None) from what a forward returned; ConfigError naming it otherwise."""
    if isinstance(out, torch.Tensor):
        emb, logits = out, None
    elif isinstance(out, (tuple, list)) and len(out) in (1, 2) and all(isinstance(t, torch.Tensor) for t in out):
        emb, logits = out[0], (out[1] if len(out) == 2 else None)
    else:
        got = type(out).__name__ + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "")
        raise ConfigError(f"{source}: forward must return embedding [B,D] or (embedding, logits); got {got}")
    if emb.ndim != 2:
        raise ConfigError(f"{source}: embedding must be 2-D [B,D]; got shape {tuple(emb.shape)}")
    if logits is not None and (logits.ndim != 2 or logits.shape[0] != emb.shape[0]):
        raise ConfigError(f"{source}: logits must be 2-D [B,C]; got shape {tuple(logits.shape)}")
    return emb, logits


class Encoder:
    """A loaded encoder. `embed(images)` maps float32 `[B,3,H,W]` in [0,1] to (embeddings, logits or None)."""

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        encoder_id: str,
        input_size: int,
        device: str = "cpu",
        autocast: bool = False,
        class_names: Sequence[str] | None = None,
        min_side: int = MIN_SIDE,
    ) -> None:
        if input_size < 16:
            raise ConfigError(f"input_size={input_size} must be >= 16 pixels")
        if min_side < MIN_SIDE:
            raise ConfigError(f"{encoder_id}: min_side={min_side} must be >= {MIN_SIDE} pixels")
        self.encoder_id = encoder_id
        self.input_size = int(input_size)
        # The smallest source frame (shorter side, px) this encoder accepts; decoding turns a smaller frame into
        # an error row instead of upscaling it (embeddings.decode, the pipeline's workers).
        self.min_side = int(min_side)
        self.device = torch.device(device)
        self.autocast = autocast and self.device.type == "cuda"
        self.module = module.to(self.device).eval()
        probe_emb, probe_logits = self._forward(torch.zeros(2, 3, input_size, input_size, device=self.device))
        self.dim = int(probe_emb.shape[1])
        self.n_classes = None if probe_logits is None else int(probe_logits.shape[1])
        names = tuple(class_names) if class_names else None
        if names is not None and len(names) != self.n_classes:
            raise ConfigError(
                f"{encoder_id}: {len(names)} class names stored with the model but it returns "
                f"{self.n_classes} logits"
            )
        self.class_names = names

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        ctx = torch.autocast("cuda", dtype=torch.float16) if self.autocast else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            return split_output(self.module(x), source=self.encoder_id)

    def embed_tensor(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        emb, logits = self._forward(x.to(self.device, non_blocking=True))
        e = emb.float().cpu().numpy()
        lg = None if logits is None else logits.float().cpu().numpy()
        return np.ascontiguousarray(e, dtype=np.float32), (None if lg is None else np.ascontiguousarray(lg))

    def embed(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """float32 `[B,3,H,W]` in [0,1] -> (embeddings float32 `[B,D]`, logits float32 `[B,C]` or None)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ConfigError(f"{self.encoder_id}: expected images [B,3,H,W]; got shape {images.shape}")
        return self.embed_tensor(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)))

    def embed_uint8(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 `[B,H,W,3]` (what `decode_batch` returns) -> the same as `embed`, converting inside torch."""
        x = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        return self.embed_tensor(x.contiguous())

    def __repr__(self) -> str:
        return (f"Encoder({self.encoder_id!r}, dim={self.dim}, n_classes={self.n_classes}, "
                f"input_size={self.input_size}, device={self.device.type!r})")
