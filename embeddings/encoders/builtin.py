"""`builtin` — the default encoder: hand-built image statistics, no downloaded weights, works on any frames.

Each frame is resized to 64x64 and described by blocks of features:

- `layout`: mean R, G, B, luminance, two opponent channels and saturation on 1x1, 2x2 and 4x4 grids
  (sky, road, night, fog, glare, snow);
- `presence`: which colours occur at all — a joint RGB 4x4x4 histogram mapped through 1 - exp(-pixels/2),
  so two pixels of a colour count almost as much as two hundred (orange cones, blue flashing lights, a
  brown animal on grey road are a handful of pixels at 64 px);
- `histogram`: the square-rooted joint RGB 5x5x5 histogram (how much of each colour);
- `edges`: magnitude-weighted gradient-orientation histograms on 1x1 and 2x2 grids and edge density on
  a 4x4 grid;
- `texture`: a fixed bank of 24 random 3x3 colour filters (seeded, so every machine builds the same bank),
  ReLU, average-pooled on 1x1 and 2x2 grids and max-pooled globally, at 32 and 16 px.

Zero setup (`builtin`): the `presence` (weight 2), `layout` and `texture` blocks, each L2-normalised, then
the whole vector L2-normalised (64 + 147 + 288 = 499 dims). Deterministic and needs no fitting.

Fitted (`builtin:FIT.npz`, written by `fit_builtin` / `edgemine fit-builtin` from reference frames): the
`layout`, `histogram`, `edges` and `texture` blocks standardised per dimension with the reference mean and
standard deviation (floored at 1e-3 of the largest), each block scaled by 1/sqrt(its size) so blocks weigh
the same, not normalised afterwards (616 dims). A dimension the reference never varies in — a colour
ordinary traffic never shows — then moves a frame far. Measured with kNN novelty on synthetic drives
(docs/BENCHMARKS.md) it helps only when the reference covers the fleet's conditions well (AUROC 0.95 vs
0.86 zero-setup on one pair of sets) and hurts when it does not (0.85 vs 0.88; 0.45 vs 0.72 with 4
reference drives), so the zero-setup variant stays the default. The fit is streamed (running sums).
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgemine.embeddings.encoders.base import Encoder, file_digest
from edgemine.errors import ConfigError, IncompatibleArtifactError, InputNotFoundError
from edgemine.runtime import atomic_write_bytes

VERSION = "v1"  # bump when the features change: the encoder id changes with it
WORK_SIZE = 64
DEFAULT_INPUT_SIZE = 64
N_FILTERS = 24
FILTER_SEED = 20_260_101
ZERO_SETUP_WEIGHTS: dict[str, float] = {"presence": 2.0, "layout": 1.0, "texture": 1.0}
FIT_BLOCKS: tuple[str, ...] = ("layout", "histogram", "edges", "texture")
STD_FLOOR = 1e-3  # x the largest per-dimension std: unseen dimensions are amplified, but boundedly
FIT_FORMAT = "edgemine-builtin-fit"


def _grid_means(x: torch.Tensor, grids: tuple[int, ...]) -> torch.Tensor:
    return torch.cat([F.adaptive_avg_pool2d(x, g).flatten(1) for g in grids], dim=1)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=1, eps=1e-8)


def _filter_bank() -> torch.Tensor:
    g = torch.Generator().manual_seed(FILTER_SEED)
    w = torch.randn(N_FILTERS, 3, 3, 3, generator=g)
    w = w - w.mean(dim=(1, 2, 3), keepdim=True)  # zero mean: respond to structure, not to brightness
    return w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def _rgb_histogram(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Pixel counts in a joint RGB histogram with `levels` bins per channel: [B, levels**3]."""
    q = (x * levels).long().clamp_(0, levels - 1)
    idx = (q[:, 0] * levels * levels + q[:, 1] * levels + q[:, 2]).flatten(1)
    h = torch.zeros(x.shape[0], levels**3, dtype=x.dtype, device=x.device)
    return h.scatter_add_(1, idx, torch.ones_like(idx, dtype=x.dtype))


class BuiltinFeatures(nn.Module):
    """float32 [B,3,H,W] in [0,1] -> named feature blocks (see the module docstring)."""

    bank: torch.Tensor
    sobel: torch.Tensor
    luma: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("bank", _filter_bank())
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0
        self.register_buffer("sobel", torch.stack([sobel, sobel.t()]).unsqueeze(1))
        self.register_buffer("luma", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1))

    def blocks(self, x: torch.Tensor, names: tuple[str, ...]) -> list[torch.Tensor]:
        if x.shape[-1] != WORK_SIZE or x.shape[-2] != WORK_SIZE:
            x = F.interpolate(x, size=(WORK_SIZE, WORK_SIZE), mode="bilinear", align_corners=False, antialias=True)
        x = x.float().clamp(0.0, 1.0)
        return [getattr(self, f"_{n}")(x) for n in names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.blocks(x, tuple(ZERO_SETUP_WEIGHTS) + FIT_BLOCKS), dim=1)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        y = (x * self.luma).sum(1, keepdim=True)
        sat = x.amax(1, keepdim=True) - x.amin(1, keepdim=True)
        return _grid_means(torch.cat([r, g, b, y, r - g, b - (r + g) / 2, sat], dim=1), (1, 2, 4))

    def _presence(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 - torch.exp(-_rgb_histogram(x, 4) / 2.0)

    def _histogram(self, x: torch.Tensor) -> torch.Tensor:
        return (_rgb_histogram(x, 5) / float(x.shape[-1] * x.shape[-2])).sqrt()

    def _edges(self, x: torch.Tensor) -> torch.Tensor:
        y = (x * self.luma).sum(1, keepdim=True)
        gxy = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), self.sobel)
        mag = gxy.pow(2).sum(1, keepdim=True).sqrt()
        ang = torch.atan2(gxy[:, 1:2], gxy[:, 0:1]) % torch.pi  # unsigned orientation
        bins = (ang / torch.pi * 8).long().clamp_(0, 7)
        hist = torch.zeros(x.shape[0], 8, *mag.shape[2:], dtype=x.dtype, device=x.device)
        hist.scatter_(1, bins, mag)
        return torch.cat([_grid_means(hist, (1, 2)), _grid_means((mag > 0.05).to(x.dtype), (4,))], dim=1)

    def _texture(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for scaled in (F.avg_pool2d(x, 2), F.avg_pool2d(x, 4)):
            r = F.relu(F.conv2d(scaled - 0.5, self.bank, padding=1))
            out += [_grid_means(r, (1, 2)), F.adaptive_max_pool2d(r, 1).flatten(1)]
        return torch.cat(out, dim=1)


class ZeroSetupBuiltin(nn.Module):
    """`builtin`: weighted, per-block L2-normalised presence + layout + texture, L2-normalised."""

    def __init__(self) -> None:
        super().__init__()
        self.features = BuiltinFeatures()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        names = tuple(ZERO_SETUP_WEIGHTS)
        parts = self.features.blocks(x, names)
        return _unit(torch.cat([_unit(p) * ZERO_SETUP_WEIGHTS[n] for n, p in zip(names, parts, strict=True)], dim=1))


class RawFitFeatures(nn.Module):
    """The unstandardised FIT_BLOCKS, concatenated: what `fit_builtin` takes statistics of."""

    def __init__(self) -> None:
        super().__init__()
        self.features = BuiltinFeatures()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.features.blocks(x, FIT_BLOCKS), dim=1)


class FittedBuiltin(nn.Module):
    """`builtin:FIT.npz`: FIT_BLOCKS standardised with the reference statistics, block-scaled."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, mean: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.raw = RawFitFeatures()
        self.register_buffer("mean", torch.from_numpy(mean.astype(np.float32)))
        self.register_buffer("scale", torch.from_numpy(scale.astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.raw(x) - self.mean) * self.scale


def block_sizes(names: tuple[str, ...] = FIT_BLOCKS) -> list[int]:
    with torch.no_grad():
        return [int(b.shape[1]) for b in BuiltinFeatures().blocks(torch.zeros(1, 3, WORK_SIZE, WORK_SIZE), names)]


def builtin_id() -> str:
    """`builtin:v1-<hash of the filter bank>`: two builds share an id only if they compute the same features."""
    return f"builtin:{VERSION}-{hashlib.sha256(_filter_bank().numpy().tobytes()).hexdigest()[:8]}"


# ---------------------------------------------------------------- fitting
def standardise(mean: np.ndarray, std: np.ndarray, sizes: list[int], *, floor: float = STD_FLOOR) -> np.ndarray:
    """Per-dimension scale: 1/max(std, floor*max std), times 1/sqrt(block size) so each block weighs the same."""
    std = np.asarray(std, dtype=np.float64)
    if std.shape != mean.shape or sum(sizes) != std.shape[0]:
        raise ConfigError(f"std {std.shape} / mean {mean.shape} do not match block sizes {sizes}")
    floored = np.maximum(std, floor * float(std.max()) + 1e-12)
    block = np.concatenate([np.full(n, 1.0 / np.sqrt(n)) for n in sizes])
    return (block / floored).astype(np.float32)


@dataclass
class FitResult:
    path: str
    n_frames: int
    dim: int
    seconds: float
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (frame_id, stage, reason)

    def summary(self) -> str:
        return (f"fitted builtin encoder on {self.n_frames} reference frames ({self.dim} dims) in "
                f"{self.seconds:.0f}s; {len(self.errors)} frame(s) unusable -> {self.path}")


def fit_builtin(
    manifest: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    input_size: int = DEFAULT_INPUT_SIZE,
    batch_size: int = 1024,
    threads: int | None = None,
    progress: bool = False,
) -> FitResult:
    """Fit `builtin:PATH` on reference frames: streamed per-dimension mean and std of the raw features."""
    from edgemine.contracts import iter_manifest
    from edgemine.embeddings.decode import decode_batch

    t0 = time.perf_counter()
    threads = threads or max(1, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    raw = RawFitFeatures().eval()
    total = sq = None
    n = 0
    errors: list[tuple[str, str, str]] = []
    with ThreadPoolExecutor(threads) as pool, torch.inference_mode():
        for batch in iter_manifest(manifest, batch_size=batch_size, columns=["frame_id", "drive_id", "timestamp",
                                                                           "uri"]):
            ids = batch.column("frame_id").to_pylist()
            dec = decode_batch(batch.column("uri").to_pylist(), size=input_size, pool=pool)
            errors += [(ids[i], stage, reason) for i, stage, reason in dec.errors]
            if not len(dec.ok):
                continue
            x = torch.from_numpy(dec.images).permute(0, 3, 1, 2).float().div_(255.0)
            f = raw(x).double()
            total = f.sum(0) if total is None else total + f.sum(0)
            sq = (f * f).sum(0) if sq is None else sq + (f * f).sum(0)
            n += len(dec.ok)
            if progress:
                print(f"fit-builtin: {n} frames ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    if n < 2 or total is None or sq is None:
        raise ConfigError(f"need at least 2 usable reference frames to fit the builtin encoder; got {n} "
                          f"({len(errors)} unusable)")
    mean = (total / n).numpy()
    std = np.sqrt(np.maximum((sq / n).numpy() - mean**2, 0.0))
    scale = standardise(mean, std, block_sizes())
    path = save_fit(out, mean.astype(np.float32), scale, n_frames=n)
    return FitResult(str(path), n, int(mean.shape[0]), round(time.perf_counter() - t0, 2), errors)


def save_fit(path: str | os.PathLike[str], mean: np.ndarray, scale: np.ndarray, *, n_frames: int) -> Path:
    """Write a fit file atomically (a reader sees the old fit or the new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, format=np.array(FIT_FORMAT), base_id=np.array(builtin_id()), mean=mean, scale=scale,
             n_frames=np.array(n_frames))
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_fit(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise InputNotFoundError(f"builtin fit file {p!r} does not exist (write one with `edgemine fit-builtin`)")
    try:
        with np.load(p, allow_pickle=False) as z:
            fmt, base, mean, scale = str(z["format"]), str(z["base_id"]), z["mean"], z["scale"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{p!r} is not a builtin fit file: {exc}") from exc
    if fmt != FIT_FORMAT:
        raise ConfigError(f"{p!r} has format {fmt!r}, expected {FIT_FORMAT!r}")
    if base != builtin_id():
        raise IncompatibleArtifactError(
            f"{p!r} was fitted on features {base!r} but this build computes {builtin_id()!r}; refit it"
        )
    dim = sum(block_sizes())
    if mean.shape != (dim,) or scale.shape != (dim,):
        raise ConfigError(f"{p!r}: mean {mean.shape} / scale {scale.shape} do not fit {dim} features")
    return mean, scale


def load(arg: str, *, input_size: int | None, device: str, autocast: bool) -> Encoder:
    size = input_size or DEFAULT_INPUT_SIZE
    # Statistics in fp16 lose the small histogram fractions the features rely on: never autocast.
    if not arg:
        return Encoder(ZeroSetupBuiltin(), encoder_id=builtin_id(), input_size=size, device=device, autocast=False)
    path = os.path.expanduser(arg)
    mean, scale = load_fit(path)
    return Encoder(FittedBuiltin(mean, scale), encoder_id=f"{builtin_id()}+fit-sha256-{file_digest(path)}",
                   input_size=size, device=device, autocast=False)
