"""The baseline perception model: a small CNN trained on labelled reference frames, exported as TorchScript.

It is the "pre-trained model" the demo mines with (`torchscript:model.pt`: forward returns
`(embedding [B,128], logits [B,C])`) and the model the closed loop retrains: `train_classifier` takes
extra labelled rows and new class names (rare categories reviewers confirmed) and can start from a
previous model (`init_from`), keeping its weights for the classes it already knows.

The TorchScript file carries `edgemine.json` (class names, input size, width, metrics) as an extra file,
so `torchscript:PATH` knows them and `init_from` can rebuild the trainable module. Training holds the
decoded training frames in memory as uint8 (about 12 KB a frame at 64 px: 20k frames = 250 MB).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from edgemine.embeddings.decode import decode_batch
from edgemine.errors import ConfigError, IncompatibleArtifactError, SchemaError

MODEL_KIND = "edgemine-baseline"
FORMAT_VERSION = 1
META_FILE = "edgemine.json"  # same name embeddings.encoders.torchscript reads
DEFAULT_WIDTH = 16  # channels of the first conv; the embedding has 8 * width dims
DEFAULT_EPOCHS = 8
VAL_FRACTION = 0.2


# ---------------------------------------------------------------- the network
def _block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class BaselineCNN(nn.Module):
    """Five 3x3 conv blocks (four stride-2), global average pool -> embedding, one Linear -> logits.

    Sized for 2 CPU cores: at 64 px it trains at ~2.5k frames/s and infers at ~15k frames/s.
    """

    def __init__(self, n_classes: int, *, width: int = DEFAULT_WIDTH) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_block(3, w, 2), *_block(w, 2 * w, 2), *_block(2 * w, 4 * w, 2), *_block(4 * w, 4 * w, 1),
            *_block(4 * w, 8 * w, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8 * w, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.pool(self.features((x - 0.5) * 4.0)).flatten(1)
        return emb, self.head(emb)


# ---------------------------------------------------------------- results
@dataclass
class TrainResult:
    model_path: str
    classes: list[str]
    input_size: int
    n_train: int
    n_val: int
    val_accuracy: float | None  # held-out accuracy (None when there is no held-out row)
    val_balanced_accuracy: float | None  # mean of per-class recalls over classes present in val
    majority_accuracy: float | None  # accuracy of always predicting the commonest training class
    per_class_accuracy: dict[str, float]
    train_accuracy: float
    epochs: int
    seconds: float
    init_from: str | None
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (frame_id, stage, reason)

    def summary(self) -> str:
        val = (f"held-out accuracy {self.val_accuracy:.3f} (balanced {self.val_balanced_accuracy:.3f}, "
               f"majority class {self.majority_accuracy:.3f}) on {self.n_val} frames"
               if self.val_accuracy is not None else "no held-out frames")
        return (f"trained {len(self.classes)} classes on {self.n_train} frames in {self.epochs} epochs, "
                f"{self.seconds:.0f}s; {val}; skipped {len(self.skipped)} frame(s) -> {self.model_path}")


@dataclass
class Prediction:
    frame_ids: list[str]  # rows that decoded, in input order
    labels: list[str]
    probs: np.ndarray  # float32 [n, C]
    class_names: list[str]
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (frame_id, stage, reason)


# ---------------------------------------------------------------- data
@dataclass
class _Frames:
    ids: list[str]
    images: np.ndarray  # uint8 [n, S, S, 3]
    labels: list[str | None]
    drives: list[str | None]
    rows: np.ndarray  # int64 [n]: each frame's row in the input table


def _column(rows: pa.Table, name: str) -> list:
    return rows.column(name).to_pylist() if name in rows.column_names else [None] * rows.num_rows


def _load_frames(rows: pa.Table, *, label_column: str, size: int, threads: int, what: str,
                 need_labels: bool = True) -> tuple[_Frames, list[tuple[str, str, str]]]:
    if "uri" not in rows.column_names:
        raise SchemaError(f"{what}: rows need a 'uri' column; got {rows.column_names}")
    if need_labels and label_column not in rows.column_names:
        raise SchemaError(f"{what}: label column {label_column!r} is missing; columns are {rows.column_names}")
    uris = rows.column("uri").to_pylist()
    ids = [fid if fid is not None else f"row-{i}" for i, fid in enumerate(_column(rows, "frame_id"))]
    labels = _column(rows, label_column)
    drives = _column(rows, "drive_id")
    skipped: list[tuple[str, str, str]] = []
    keep = []
    for i, lab in enumerate(labels):
        if need_labels and (lab is None or str(lab) == ""):
            skipped.append((ids[i], "validate", f"no {label_column!r} label"))
        else:
            keep.append(i)
    images = np.empty((len(keep), size, size, 3), dtype=np.uint8)
    ok_rows: list[int] = []
    chunk = 2048
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(keep), chunk):
            part = keep[start:start + chunk]
            dec = decode_batch([uris[i] for i in part], size=size, pool=pool)
            images[len(ok_rows):len(ok_rows) + len(dec.ok)] = dec.images
            ok_rows.extend(part[j] for j in dec.ok)
            skipped.extend((ids[part[j]], stage, reason) for j, stage, reason in dec.errors)
    frames = _Frames([ids[i] for i in ok_rows], images[: len(ok_rows)],
                     [None if labels[i] is None else str(labels[i]) for i in ok_rows], [drives[i] for i in ok_rows],
                     np.asarray(ok_rows, dtype=np.int64))
    return frames, skipped


def _is_val(key: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return (h % 10_000) < fraction * 10_000


def split_by_drive(drives: list[str | None], ids: list[str], *, fraction: float = VAL_FRACTION) -> np.ndarray:
    """Boolean mask of held-out rows: whole drives (so neighbouring frames never straddle the split).

    Falls back to hashing frame ids when there is no drive_id or fewer than 3 drives.
    """
    known = [d for d in drives if d is not None]
    if len(set(known)) >= 3 and len(known) == len(drives):
        mask = np.array([_is_val(str(d), fraction) for d in drives])
        if 0 < mask.sum() < len(mask):
            return mask
    return np.array([_is_val(i, fraction) for i in ids])


# ---------------------------------------------------------------- model files
def read_model_metadata(path: str | os.PathLike[str]) -> dict:
    extra = {META_FILE: ""}
    torch.jit.load(os.fspath(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[META_FILE]) if extra[META_FILE] else {}


def load_baseline(path: str | os.PathLike[str]) -> tuple[BaselineCNN, dict]:
    """Rebuild the trainable module from an exported baseline (TorchScript + metadata)."""
    extra = {META_FILE: ""}
    scripted = torch.jit.load(os.fspath(path), map_location="cpu", _extra_files=extra)
    meta = json.loads(extra[META_FILE]) if extra[META_FILE] else {}
    if meta.get("kind") != MODEL_KIND:
        raise IncompatibleArtifactError(
            f"{path} is not an edgemine baseline model (kind={meta.get('kind')!r}, expected {MODEL_KIND!r}); "
            "init_from needs a model written by train_classifier / `edgemine train-baseline`"
        )
    model = BaselineCNN(len(meta["class_names"]), width=int(meta["width"]))
    model.load_state_dict(scripted.state_dict())
    return model, meta


def export_model(model: BaselineCNN, out: str | os.PathLike[str], *, meta: dict) -> Path:
    """Script the model and write it with its metadata atomically (temp file + os.replace)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scripted = torch.jit.script(model.eval())
    # Not runtime.atomic_write_bytes: torch names the archive's top folder after the file it writes, so
    # saving to a buffer instead would change the file's bytes and with them its `torchscript:` encoder id.
    tmp = out.with_name(f".{out.name}.tmp")
    torch.jit.save(scripted, str(tmp), _extra_files={META_FILE: json.dumps(meta, sort_keys=True)})
    os.replace(tmp, out)
    return out


# ---------------------------------------------------------------- training
def _batches(
    images: np.ndarray, idx: np.ndarray, batch: int, *, rng: np.random.Generator | None = None,
    flip_all: bool = False,
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Batches of float input and which rows were flipped; with `rng`, randomly flipped left-right
    (brightness and shift jitter hurt here); with `flip_all`, every row flipped."""
    for s in range(0, len(idx), batch):
        sel = idx[s:s + batch]
        x = torch.from_numpy(images[sel]).permute(0, 3, 1, 2).float().div_(255.0)
        f = torch.zeros(len(sel), dtype=torch.bool)
        if rng is not None:
            f = torch.from_numpy(rng.random(len(sel)) < 0.5)
        elif flip_all:
            f = torch.ones(len(sel), dtype=torch.bool)
        if f.any():
            x[f] = x[f].flip(3)
        yield sel, x.contiguous(), f


def _evaluate(model: nn.Module, images: np.ndarray, batch: int = 512) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for _, x, _ in _batches(images, np.arange(len(images)), batch):
            out.append(torch.softmax(model(x)[1], dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _recalibrate_batchnorm(model: nn.Module, images: np.ndarray, idx: np.ndarray, *, batch: int = 256,
                           max_frames: int = 8192) -> None:
    """Recompute BatchNorm running statistics as exact averages over (up to `max_frames`) training frames.

    The running averages kept during training lag the weights; with few steps (small data, fine-tuning)
    eval-mode outputs then differ badly from train-mode ones. One no-grad pass fixes that.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    with torch.no_grad():
        for _, x, _ in _batches(images, idx[:max_frames], batch):
            model(x)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


def _init_head(new: BaselineCNN, old: BaselineCNN | None, old_classes: list[str], classes: list[str]) -> None:
    if old is None:
        return
    new.features.load_state_dict(old.features.state_dict())
    with torch.no_grad():
        for j, name in enumerate(classes):
            if name in old_classes:
                k = old_classes.index(name)
                new.head.weight[j] = old.head.weight[k]
                new.head.bias[j] = old.head.bias[k]


@dataclass
class _Teacher:
    logits: torch.Tensor  # float32 [2, n_frames, C_old]: init_from's logits of each frame as is and flipped
    distilled: torch.Tensor  # bool [n_frames]
    old_index: torch.Tensor  # int64 [C_old]: each old class's column in the new model's logits


def _teacher_logits(old: BaselineCNN, images: np.ndarray, distill_rows: np.ndarray | None, frame_rows: np.ndarray,
                    old_classes: list[str], classes: list[str]) -> _Teacher:
    missing = [c for c in old_classes if c not in classes]
    if missing:
        raise ConfigError(f"distillation needs init_from's classes in classes=; missing {missing}")
    distilled = np.ones(len(frame_rows), bool) if distill_rows is None else distill_rows[frame_rows]
    logits = torch.zeros((2, len(frame_rows), len(old_classes)))
    idx = np.flatnonzero(distilled)
    old.eval()
    with torch.inference_mode():
        for o in (0, 1):
            for sel, x, _ in _batches(images, idx, 512, flip_all=bool(o)):
                logits[o, torch.from_numpy(sel)] = old(x)[1]
    return _Teacher(logits, torch.from_numpy(distilled), torch.tensor([classes.index(c) for c in old_classes]))


def _distill_loss(logits: torch.Tensor, teacher: _Teacher, sel: np.ndarray, flipped: torch.Tensor,
                  row_w: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """T**2 * KL(teacher || student) at temperature T over the teacher's classes, batch mean by row weight."""
    s = torch.from_numpy(sel)
    target = torch.where(flipped[:, None], teacher.logits[1, s], teacher.logits[0, s])
    log_p = torch.log_softmax(logits[:, teacher.old_index] / temperature, dim=1)
    q = torch.softmax(target / temperature, dim=1)
    kl = (q * (torch.log(q.clamp_min(1e-12)) - log_p)).sum(1)
    w = row_w * teacher.distilled[s].float()
    return temperature ** 2 * (kl * w).sum() / row_w.sum().clamp_min(1e-12)


def train_classifier(
    rows: pa.Table,
    *,
    out: str | os.PathLike[str],
    label_column: str = "label",
    classes: list[str] | None = None,
    init_from: str | os.PathLike[str] | None = None,
    epochs: int = DEFAULT_EPOCHS,
    input_size: int = 64,
    seed: int = 0,
    val_rows: pa.Table | None = None,
    batch_size: int = 128,
    lr: float = 3e-3,
    width: int = DEFAULT_WIDTH,
    threads: int | None = None,
    progress: bool = False,
    freeze_trunk_epochs: int = 0,
    trunk_lr: float | None = None,
    class_weight_power: float = 0.5,
    sample_weights: np.ndarray | None = None,
    distill_weight: float = 0.0,
    distill_temperature: float = 2.0,
    distill_rows: np.ndarray | None = None,
) -> TrainResult:
    """Train (or fine-tune) the baseline CNN on `rows` (`uri` + label column) and export TorchScript to `out`.

    classes: class order of the logits; default: `init_from`'s classes followed by any new labels, sorted.
      Labels outside `classes` are an error naming them.
    init_from: a previous baseline; its conv trunk and the head rows of classes it knows are kept, new
      classes start from fresh head rows (how the closed loop adds confirmed rare categories).
    val_rows: held-out rows; default: whole drives hashed out of `rows` (20%).
    freeze_trunk_epochs: the first N epochs train only the head (the conv trunk and its BatchNorm statistics
      stay as `init_from` left them), so fresh head rows for new classes settle before the trunk moves.
    trunk_lr: peak learning rate of the conv trunk once it trains (default: `lr`); lower keeps a fine-tuned
      trunk closer to `init_from`.
    class_weight_power: loss weight of a class is count ** -power (0.5: inverse square root, 0: unweighted).
    sample_weights: one non-negative weight per row of `rows` (a row's share of the loss relative to the
      others); default: 1 for every row.
    distill_weight: lambda of distillation from `init_from` (Learning without Forgetting): each distilled row
      adds lambda * T**2 * KL(init_from's softened distribution || the model's, over init_from's classes) to
      its loss, averaged over the batch like the cross-entropy (row weights included, undistilled rows 0).
      init_from's logits are computed once, before training, for each row as it is and flipped (training
      flips at random). 0 (default): no distillation, training as without it.
    distill_temperature: T, the softmax temperature of both distributions in that term (> 0).
    distill_rows: one bool per row of `rows`: which rows are distilled (e.g. the replayed old training rows);
      default: every row. Only with distill_weight > 0.
    Rows without a label or whose image does not decode are skipped and listed in `TrainResult.skipped`.
    """
    t0 = time.perf_counter()
    if epochs < 1:
        raise ConfigError(f"epochs={epochs} must be >= 1")
    if not 16 <= input_size <= 512:
        raise ConfigError(f"input_size={input_size} must be between 16 and 512")
    if batch_size < 2:
        raise ConfigError(f"batch_size={batch_size} must be >= 2")
    if not 0 <= freeze_trunk_epochs <= epochs:
        raise ConfigError(f"freeze_trunk_epochs={freeze_trunk_epochs} must be between 0 and epochs={epochs}")
    if trunk_lr is not None and not trunk_lr >= 0:
        raise ConfigError(f"trunk_lr={trunk_lr} must be >= 0")
    if not 0 <= class_weight_power <= 1:
        raise ConfigError(f"class_weight_power={class_weight_power} must be between 0 and 1")
    if sample_weights is not None:
        sample_weights = np.asarray(sample_weights, dtype=np.float64)
        if sample_weights.shape != (rows.num_rows,) or not np.all(np.isfinite(sample_weights)) or (
                sample_weights < 0).any():
            raise ConfigError(f"sample_weights must be {rows.num_rows} finite non-negative numbers (one per row); "
                              f"got shape {sample_weights.shape}")
    if not distill_weight >= 0:
        raise ConfigError(f"distill_weight={distill_weight} must be >= 0")
    if not distill_temperature > 0:
        raise ConfigError(f"distill_temperature={distill_temperature} must be > 0")
    if distill_weight > 0 and init_from is None:
        raise ConfigError(f"distill_weight={distill_weight} needs init_from (the model to distil from)")
    if distill_rows is not None:
        distill_rows = np.asarray(distill_rows)
        if distill_rows.shape != (rows.num_rows,) or distill_rows.dtype != np.bool_:
            raise ConfigError(f"distill_rows must be {rows.num_rows} bools (one per row); got shape "
                              f"{distill_rows.shape}, dtype {distill_rows.dtype}")
        if distill_weight == 0:
            raise ConfigError("distill_rows is given but distill_weight=0; pass distill_weight > 0")
    threads = threads or max(1, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    old, old_meta = (load_baseline(init_from) if init_from is not None else (None, {}))
    old_classes: list[str] = list(old_meta.get("class_names", []))
    if old is not None:
        width = int(old_meta["width"])

    frames, skipped = _load_frames(rows, label_column=label_column, size=input_size, threads=threads, what="rows")
    if val_rows is not None:
        val, val_skipped = _load_frames(val_rows, label_column=label_column, size=input_size, threads=threads,
                                        what="val_rows")
        skipped += val_skipped
        train_idx = np.arange(len(frames.ids))
        val_images, val_labels = val.images, val.labels
    else:
        mask = split_by_drive(frames.drives, frames.ids)
        train_idx = np.flatnonzero(~mask)
        val_images, val_labels = frames.images[mask], [frames.labels[i] for i in np.flatnonzero(mask)]
    if progress:
        print(f"train-baseline: decoded {len(frames.ids)} frames ({len(skipped)} skipped) in "
              f"{time.perf_counter() - t0:.0f}s", file=sys.stderr)
    if len(train_idx) == 0:
        raise SchemaError(f"no usable training rows ({len(skipped)} skipped, first: {skipped[:1]})")

    seen = sorted({lab for lab in frames.labels if lab is not None} | {lab for lab in val_labels if lab})
    if classes is None:
        classes = old_classes + [c for c in seen if c not in old_classes]
    unknown = [c for c in seen if c not in classes]
    if unknown:
        raise ConfigError(f"labels {unknown} are not in classes={classes}")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"classes={classes} has duplicates")
    cls_index = {c: i for i, c in enumerate(classes)}
    y_all = np.array([cls_index[str(lab)] for lab in frames.labels], dtype=np.int64)
    y_train = y_all[train_idx]

    model = BaselineCNN(len(classes), width=width)
    _init_head(model, old, old_classes, classes)
    # Inverse-sqrt-frequency class weights: rare classes (pedestrian, cyclist, new rare categories) still
    # move the loss without a resampler.
    row_w = np.ones(len(frames.ids)) if sample_weights is None else sample_weights[frames.rows]
    counts = np.bincount(y_train, weights=row_w[train_idx], minlength=len(classes))
    weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1e-12) ** class_weight_power, 0.0)
    weights = weights / weights[counts > 0].mean()
    class_w = torch.tensor(weights, dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=class_w, reduction="none" if sample_weights is not None else "mean")
    if trunk_lr is None:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        peaks: float | list[float] = lr
    else:
        opt = torch.optim.AdamW([{"params": model.features.parameters(), "lr": trunk_lr},
                                 {"params": model.head.parameters(), "lr": lr}], weight_decay=1e-4)
        peaks = [trunk_lr, lr]
    teacher = _teacher_logits(old, frames.images, distill_rows, frames.rows, old_classes, classes) if (
        distill_weight > 0 and old is not None) else None
    steps = epochs * ((len(train_idx) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peaks, total_steps=steps, pct_start=0.15)

    correct = seen_n = 0
    for epoch in range(epochs):
        frozen = epoch < freeze_trunk_epochs
        model.train()
        model.features.requires_grad_(not frozen)
        if frozen:
            model.features.eval()  # BatchNorm keeps init_from's statistics while the trunk is frozen
        order = rng.permutation(train_idx)
        correct = seen_n = 0
        for sel, x, flipped in _batches(frames.images, order, batch_size, rng=rng):
            y = torch.from_numpy(y_all[sel])
            opt.zero_grad(set_to_none=True)
            logits = model(x)[1]
            if sample_weights is None:
                loss = loss_fn(logits, y)
            else:  # the weighted mean over the batch, each row weighing class weight x row weight
                w = class_w[y] * torch.from_numpy(row_w[sel]).float()
                loss = (loss_fn(logits, y) * torch.from_numpy(row_w[sel]).float()).sum() / w.sum().clamp_min(1e-12)
            if teacher is not None:
                loss = loss + distill_weight * _distill_loss(logits, teacher, sel, flipped,
                                                              torch.from_numpy(row_w[sel]).float(),
                                                              temperature=distill_temperature)
            loss.backward()
            opt.step()
            sched.step()
            correct += int((logits.argmax(1) == y).sum())
            seen_n += len(sel)
        if progress:
            print(f"train-baseline: epoch {epoch + 1}/{epochs} loss {float(loss.detach()):.3f} "
                  f"train acc {correct / max(seen_n, 1):.3f} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)

    model.features.requires_grad_(True)
    if freeze_trunk_epochs < epochs:  # a trunk that never trained keeps init_from's statistics
        _recalibrate_batchnorm(model, frames.images, rng.permutation(train_idx))
    model.eval()
    majority = int(np.bincount(y_train, minlength=len(classes)).argmax())
    val_acc = bal = maj = None
    per_class: dict[str, float] = {}
    if len(val_images):
        yv = np.array([cls_index[str(lab)] for lab in val_labels], dtype=np.int64)
        pred = _evaluate(model, val_images).argmax(1)
        val_acc = float((pred == yv).mean())
        maj = float((yv == majority).mean())
        for c in np.unique(yv):
            per_class[classes[c]] = float((pred[yv == c] == c).mean())
        bal = float(np.mean(list(per_class.values())))
    result = TrainResult(
        model_path=str(out), classes=list(classes), input_size=input_size, n_train=len(train_idx),
        n_val=len(val_images), val_accuracy=val_acc, val_balanced_accuracy=bal, majority_accuracy=maj,
        per_class_accuracy=per_class, train_accuracy=correct / max(seen_n, 1), epochs=epochs,
        seconds=0.0, init_from=None if init_from is None else str(init_from), skipped=skipped,
    )
    meta = {"kind": MODEL_KIND, "format_version": FORMAT_VERSION, "class_names": list(classes),
            "input_size": input_size, "width": width, "embedding_dim": 8 * width, "seed": seed,
            "metrics": {k: v for k, v in asdict(result).items() if k not in ("skipped", "model_path", "seconds")}}
    export_model(model, out, meta=meta)
    result.seconds = round(time.perf_counter() - t0, 2)
    return result


# ---------------------------------------------------------------- evaluation
def predict(
    model_path: str | os.PathLike[str], rows: pa.Table, *, batch_size: int = 512, threads: int | None = None
) -> Prediction:
    """Class probabilities and labels of `rows` (`uri`, optional `frame_id`) from an exported model.

    Works with any TorchScript model per the encoder contract that returns logits; class names come from
    the model's metadata (or are "0", "1", ... when it has none).
    """
    from edgemine.embeddings.encoders import load_encoder

    enc = load_encoder(f"torchscript:{os.fspath(model_path)}")
    if enc.n_classes is None:
        raise ConfigError(f"{model_path} returns no logits; predict needs a classifier")
    names = list(enc.class_names or [str(i) for i in range(enc.n_classes)])
    threads = threads or max(1, os.cpu_count() or 1)
    frames, errors = _load_frames(rows, label_column="", size=enc.input_size, threads=threads, what="rows",
                                  need_labels=False)
    probs = []
    for s in range(0, len(frames.ids), batch_size):
        _, logits = enc.embed_uint8(frames.images[s:s + batch_size])
        if logits is None:
            raise ConfigError(f"{model_path} returned no logits for a batch")
        probs.append(torch.softmax(torch.from_numpy(logits), dim=1).numpy())
    p = np.concatenate(probs) if probs else np.zeros((0, len(names)), np.float32)
    return Prediction(frame_ids=frames.ids, labels=[names[i] for i in p.argmax(1)] if len(p) else [],
                      probs=p.astype(np.float32), class_names=names, errors=errors)
