"""Encoders: the spec registry, the TorchScript contract, torchvision with local weights, the builtin default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from edgemine.embeddings.encoders import ENCODER_KINDS, load_encoder, parse_spec
from edgemine.errors import ConfigError, IncompatibleArtifactError, InputNotFoundError

BATCH = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)


class _TwoHeads(nn.Module):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = x.mean(dim=(2, 3)) * self.scale
        return emb, emb[:, :2] * 2.0


class _EmbeddingOnly(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3))


class _ThreeOutputs(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = x.mean(dim=(2, 3))
        return m, m, m


def _script(module: nn.Module, path: Path, meta: dict | None = None) -> str:
    extra = {"edgemine.json": json.dumps(meta)} if meta else {}
    torch.jit.save(torch.jit.script(module), str(path), _extra_files=extra)
    return f"torchscript:{path}"


# ---------------------------------------------------------------- registry
def test_unknown_kind_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown kind 'onnx'; valid kinds are \['builtin', 'efficientnet_lite0', "
                                          r"'torchscript', 'torchvision'\]"):
        load_encoder("onnx:model.onnx")
    with pytest.raises(ConfigError, match="is empty"):
        parse_spec("  ")
    assert parse_spec("torchvision:resnet18:/w/r.pth") == ("torchvision", "resnet18:/w/r.pth")
    assert set(ENCODER_KINDS) == {"builtin", "efficientnet_lite0", "torchscript", "torchvision"}


def test_importing_the_registry_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, edgemine.embeddings.encoders, edgemine.embeddings.pipeline; "
            "print('torch' in sys.modules, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------- torchscript
def test_torchscript_tuple_output_gives_embeddings_and_logits(tmp_path: Path) -> None:
    enc = load_encoder(_script(_TwoHeads(), tmp_path / "m.pt", {"input_size": 64, "class_names": ["a", "b"]}))
    emb, logits = enc.embed(BATCH)
    assert enc.dim == 3 and enc.n_classes == 2 and enc.input_size == 64 and enc.class_names == ("a", "b")
    assert np.allclose(emb, BATCH.mean(axis=(2, 3)), atol=1e-6) and np.allclose(logits, emb[:, :2] * 2, atol=1e-6)
    assert emb.dtype == np.float32 and logits.dtype == np.float32


def test_uint8_and_float_paths_agree(tmp_path: Path) -> None:
    enc = load_encoder(_script(_TwoHeads(), tmp_path / "m.pt"), input_size=32)
    img = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    from edgemine.embeddings.decode import to_model_input

    a, _ = enc.embed_uint8(img)
    b, _ = enc.embed(to_model_input(img))
    assert np.array_equal(a, b)


def test_torchscript_embedding_only(tmp_path: Path) -> None:
    enc = load_encoder(_script(_EmbeddingOnly(), tmp_path / "m.pt"), input_size=48)
    emb, logits = enc.embed(BATCH)
    assert logits is None and enc.n_classes is None and emb.shape == (3, 3)


def test_torchscript_bad_output_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="forward must return embedding .* got tuple of length 3"):
        load_encoder(_script(_ThreeOutputs(), tmp_path / "m.pt"), input_size=32)


def test_torchscript_needs_an_input_size_from_somewhere(tmp_path: Path) -> None:
    spec = _script(_EmbeddingOnly(), tmp_path / "m.pt")
    with pytest.raises(ConfigError, match="stores no input size; pass input_size"):
        load_encoder(spec)
    with pytest.raises(InputNotFoundError, match="nope.pt"):
        load_encoder(f"torchscript:{tmp_path / 'nope.pt'}")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="not a loadable TorchScript file"):
        load_encoder(f"torchscript:{tmp_path / 'junk.pt'}", input_size=32)


def test_encoder_id_is_the_weights_content_hash(tmp_path: Path) -> None:
    a = load_encoder(_script(_TwoHeads(1.0), tmp_path / "a.pt", {"input_size": 32}))
    same = tmp_path / "copy.pt"
    same.write_bytes((tmp_path / "a.pt").read_bytes())
    b = load_encoder(f"torchscript:{same}")
    c = load_encoder(_script(_TwoHeads(2.0), tmp_path / "c.pt", {"input_size": 32}))
    assert a.encoder_id == b.encoder_id != c.encoder_id
    assert a.encoder_id.startswith("torchscript:sha256-")


# ---------------------------------------------------------------- torchvision
def test_torchvision_resnet18_with_local_random_weights(tmp_path: Path) -> None:
    from edgemine.embeddings.encoders.torchvision_encoder import import_torchvision

    tv = import_torchvision()
    torch.manual_seed(0)
    model = tv.models.resnet18(weights=None, num_classes=7)
    weights = tmp_path / "r18.pth"
    torch.save(model.state_dict(), weights)
    enc = load_encoder(f"torchvision:resnet18:{weights}", input_size=64)
    assert enc.dim == 512 and enc.n_classes == 7 and enc.encoder_id.startswith("torchvision:resnet18:sha256-")
    emb, logits = enc.embed(BATCH)
    model.eval()
    x = (torch.from_numpy(BATCH) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected_logits = model(x).numpy()
        model.fc = nn.Identity()
        expected_emb = model(x).numpy()
    assert np.allclose(emb, expected_emb, atol=1e-4) and np.allclose(logits, expected_logits, atol=1e-4)


def test_torchvision_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a model name and a local weights file"):
        load_encoder("torchvision:resnet18")
    with pytest.raises(InputNotFoundError, match="missing.pth"):
        load_encoder(f"torchvision:resnet18:{tmp_path / 'missing.pth'}")
    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pth")
    with pytest.raises(ConfigError, match="resnet19.*did you mean"):
        load_encoder(f"torchvision:resnet19:{tmp_path / 'w.pth'}")
    with pytest.raises(ConfigError, match="do not fit torchvision model 'resnet18'"):
        load_encoder(f"torchvision:resnet18:{tmp_path / 'w.pth'}")


# ---------------------------------------------------------------- builtin
def test_builtin_is_deterministic_normalised_and_needs_nothing() -> None:
    a, b = load_encoder("builtin"), load_encoder("builtin")
    ea, la = a.embed(BATCH)
    eb, _ = b.embed(BATCH)
    assert la is None and a.encoder_id == b.encoder_id and a.encoder_id.startswith("builtin:v1-")
    assert np.array_equal(ea, eb)
    assert np.allclose(np.linalg.norm(ea, axis=1), 1.0, atol=1e-5)
    # Any input size works: frames are resampled to the same working size.
    big = load_encoder("builtin", input_size=128)
    assert big.dim == a.dim


def _knn_distance(query: np.ndarray, ref: np.ndarray, k: int = 3) -> np.ndarray:
    d = ((query[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    return np.sqrt(np.sort(d, axis=1)[:, k - 1])


def _embed_uris(enc, uris: list[str]) -> np.ndarray:  # noqa: ANN001
    from edgemine.embeddings.decode import decode_batch

    dec = decode_batch(uris, size=enc.input_size)
    return enc.embed_uint8(dec.images)[0]


def _rare_auc(synth_logs: Path, reference_logs: Path, spec: str) -> float:
    from sklearn.metrics import roc_auc_score

    from edgemine.contracts import read_manifest

    ref = read_manifest(reference_logs / "manifest.parquet")
    fleet = read_manifest(synth_logs / "manifest.parquet")
    gt = pq.read_table(synth_logs / "ground_truth.parquet")
    enc = load_encoder(spec)
    dist = _knn_distance(_embed_uris(enc, fleet.column("uri").to_pylist()),
                         _embed_uris(enc, ref.column("uri").to_pylist()))
    return float(roc_auc_score(np.asarray(gt.column("is_rare").to_pylist()), dist))


def test_builtin_puts_rare_scenes_far_from_ordinary_traffic(synth_logs: Path, reference_logs: Path) -> None:
    # kNN distance to reference frames as a novelty score: rare events must rank above normal frames.
    assert _rare_auc(synth_logs, reference_logs, "builtin") > 0.7


def test_fitted_builtin_standardises_with_reference_statistics(reference_logs: Path, tmp_path: Path) -> None:
    from edgemine.contracts import read_manifest
    from edgemine.embeddings.decode import decode_batch
    from edgemine.embeddings.encoders.builtin import STD_FLOOR, RawFitFeatures, block_sizes, fit_builtin

    res = fit_builtin(reference_logs / "manifest.parquet", out=tmp_path / "fit.npz", batch_size=100)
    assert res.n_frames == 240 and res.errors == [] and (tmp_path / "fit.npz").exists()
    enc = load_encoder(f"builtin:{tmp_path / 'fit.npz'}")
    assert enc.dim == res.dim == sum(block_sizes()) and "+fit-sha256-" in enc.encoder_id
    # Brute force: the same standardisation computed with numpy on all reference features at once.
    images = decode_batch(read_manifest(reference_logs / "manifest.parquet").column("uri").to_pylist(), size=64).images
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        raw = RawFitFeatures()(x).double().numpy()
    std = raw.std(axis=0)
    block = np.concatenate([np.full(n, 1 / np.sqrt(n)) for n in block_sizes()])
    expected = (raw - raw.mean(axis=0)) * block / np.maximum(std, STD_FLOOR * std.max() + 1e-12)
    got = enc.embed_uint8(images)[0]
    assert np.allclose(got, expected, atol=2e-3 * np.abs(expected).max())
    assert np.allclose(got.mean(axis=0), 0.0, atol=1e-3)


def test_fit_file_errors(tmp_path: Path) -> None:
    from edgemine.embeddings.encoders.builtin import save_fit

    with pytest.raises(InputNotFoundError, match="edgemine fit-builtin"):
        load_encoder(f"builtin:{tmp_path / 'none.npz'}")
    np.savez(tmp_path / "bad.npz", format=np.array("edgemine-builtin-fit"), base_id=np.array("builtin:v0-old"),
             mean=np.zeros(3), scale=np.zeros(3))
    with pytest.raises(IncompatibleArtifactError, match="refit it"):
        load_encoder(f"builtin:{tmp_path / 'bad.npz'}")
    save_fit(tmp_path / "short.npz", np.zeros(3, np.float32), np.ones(3, np.float32), n_frames=3)
    with pytest.raises(ConfigError, match="do not fit"):
        load_encoder(f"builtin:{tmp_path / 'short.npz'}")
