"""The Ray Data embedding job on a few hundred synthetic frames: correctness, bad frames, resume, config checks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from edgemine.contracts import ERRORS_SCHEMA, embeddings_schema, read_manifest
from edgemine.embeddings.pipeline import embed_manifest
from edgemine.errors import ConfigError, IncompatibleArtifactError
from tests.support.images import write_manifest, write_png

pytestmark = [pytest.mark.integration]


def _read_embeddings(path: str | Path) -> pa.Table:
    return ds.dataset(str(path), format="parquet").to_table()


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by("frame_id")


def _direct_forward(model_path: Path, uris: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The reference: decode with PIL and run the TorchScript module in this process, no edgemine code."""
    module = torch.jit.load(str(model_path)).eval()
    x = np.stack([np.asarray(Image.open(u).convert("RGB"), dtype=np.float32) / 255.0 for u in uris])
    with torch.no_grad():
        emb, logits = module(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
    return emb.numpy(), logits.numpy()


# ---------------------------------------------------------------- correctness
@pytest.mark.ray
def test_embeddings_equal_a_direct_forward_pass(synth_logs: Path, baseline_model: Path, tmp_path: Path,
                                                ray_local: str) -> None:
    manifest = synth_logs / "manifest.parquet"
    res = embed_manifest(manifest, encoder=f"torchscript:{baseline_model}", out=tmp_path / "out", batch_size=50,
                         shard_rows=100, actors=1, progress=False)
    assert (res.n_embedded, res.n_errors, res.n_frames, res.n_shards) == (360, 0, 360, 4)
    assert res.dim == 64 and res.encoder_id.startswith("torchscript:sha256-") and res.device == "cpu"
    got = _read_embeddings(res.embeddings_path)
    assert got.schema.equals(embeddings_schema(64))
    man = read_manifest(manifest)
    # Shards hold manifest rows in order.
    assert got.column("frame_id").to_pylist() == man.column("frame_id").to_pylist()
    emb, logits = _direct_forward(baseline_model, man.column("uri").to_pylist())
    got_emb = np.asarray(got.column("embedding").to_pylist(), dtype=np.float32)
    got_logits = np.asarray(got.column("logits").to_pylist(), dtype=np.float32)
    assert np.allclose(got_emb, emb, atol=1e-5, rtol=1e-4)
    assert np.allclose(got_logits, logits, atol=1e-5, rtol=1e-4)
    assert set(got.column("encoder").to_pylist()) == {res.encoder_id}
    assert pq.read_table(res.errors_path).num_rows == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_embedded"] == 360 and "embedded 360 of 360 frames" in res.summary()


@pytest.mark.ray
def test_decode_in_tasks_gives_the_same_result(synth_logs: Path, tmp_path: Path, ray_local: str) -> None:
    manifest = synth_logs / "manifest.parquet"
    a = embed_manifest(manifest, encoder="builtin", out=tmp_path / "a", shard_rows=120, batch_size=64, actors=1,
                       progress=False)
    b = embed_manifest(manifest, encoder="builtin", out=tmp_path / "b", shard_rows=120, batch_size=64, actors=1,
                       progress=False, decode="tasks")
    assert a.encoder_id == b.encoder_id and a.n_embedded == b.n_embedded == 360
    ta, tb = _read_embeddings(a.embeddings_path), _read_embeddings(b.embeddings_path)
    assert ta.column("frame_id").equals(tb.column("frame_id"))
    assert np.allclose(np.asarray(ta.column("embedding").to_pylist()), np.asarray(tb.column("embedding").to_pylist()),
                       atol=1e-6)
    assert ta.column("logits").null_count == ta.num_rows  # builtin has no classifier head


# ---------------------------------------------------------------- bad frames
@pytest.mark.ray
def test_every_bad_frame_lands_in_errors_parquet(synth_logs: Path, tmp_path: Path, ray_local: str) -> None:
    good = read_manifest(synth_logs / "manifest.parquet").column("uri").to_pylist()[:6]
    frames = tmp_path / "frames"
    rng = np.random.default_rng(0)
    gray = write_png(frames / "gray.png", rng.integers(0, 256, (64, 64), dtype=np.uint8), "L")
    rgba = write_png(frames / "rgba.png", rng.integers(0, 256, (64, 64, 4), dtype=np.uint8), "RGBA")
    tiny = write_png(frames / "tiny.png", rng.integers(0, 256, (10, 10, 3), dtype=np.uint8))
    (frames / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300))
    (frames / "empty.png").write_bytes(b"")
    shutil.copy(good[0], frames / "relative.png")
    uris = [*good, gray, rgba, str(frames / "missing.png"), str(frames / "corrupt.png"), tiny,
            str(frames / "empty.png"), "ftp://example.com/frame.png", "frames/relative.png", f"file://{good[1]}"]
    manifest = write_manifest(tmp_path / "manifest.parquet", uris)
    res = embed_manifest(manifest, encoder="builtin", out=tmp_path / "out", shard_rows=5, batch_size=4, actors=1,
                         progress=False)
    errors = pq.read_table(res.errors_path)
    assert errors.schema.equals(ERRORS_SCHEMA)
    by_uri = {r["uri"]: (r["stage"], r["reason"]) for r in errors.to_pylist()}
    assert set(by_uri) == {str(frames / "missing.png"), str(frames / "corrupt.png"), tiny, str(frames / "empty.png"),
                           "ftp://example.com/frame.png"}
    assert by_uri[str(frames / "missing.png")] == ("decode", f"file not found: {frames / 'missing.png'}")
    assert by_uri[str(frames / "corrupt.png")][0] == "decode" and "corrupt" in by_uri[str(frames / "corrupt.png")][1]
    assert by_uri[tiny] == ("decode", f"image too small: 10x10 px (minimum side 16): {tiny}")
    assert by_uri[str(frames / "empty.png")][1].startswith("empty file")
    assert by_uri["ftp://example.com/frame.png"][0] == "validate"
    # Converted, not rejected: grayscale, RGBA, a relative path, a file:// URI.
    emb = _read_embeddings(res.embeddings_path)
    ids = set(emb.column("frame_id").to_pylist())
    assert {"f-0006", "f-0007", "f-0013", "f-0014"} <= ids
    assert res.n_embedded == 10 and res.n_errors == 5 and res.n_embedded + res.n_errors == len(uris)
    assert res.errors_by_stage == {"decode": 4, "validate": 1}
    assert "5 unusable (decode 4, validate 1)" in res.summary()
    # The relative path resolved against the manifest's folder embeds exactly like the original.
    vec = {r["frame_id"]: r["embedding"] for r in emb.to_pylist()}
    assert np.allclose(vec["f-0013"], vec["f-0000"]) and np.allclose(vec["f-0014"], vec["f-0001"])


@pytest.mark.ray
def test_a_failing_encoder_loses_only_the_frames_it_fails_on(synth_logs: Path, tmp_path: Path,
                                                            ray_local: str) -> None:
    class NanOnBright(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = x.mean(dim=(1, 2, 3)).unsqueeze(1)
            return torch.where(m > 0.45, torch.full_like(m, float("nan")), m).repeat(1, 4)

    path = tmp_path / "nan.pt"
    torch.jit.save(torch.jit.script(NanOnBright()), str(path))
    manifest = synth_logs / "manifest.parquet"
    res = embed_manifest(manifest, encoder=f"torchscript:{path}", input_size=64, out=tmp_path / "out",
                         shard_rows=90, batch_size=32, actors=1, progress=False)
    uris = read_manifest(manifest).column("uri").to_pylist()
    bright = sum(np.asarray(Image.open(u).convert("RGB"), np.float32).mean() / 255 > 0.45 for u in uris)
    assert 0 < bright < 360 and res.n_errors == bright and res.n_embedded == 360 - bright
    reasons = set(pq.read_table(res.errors_path).column("reason").to_pylist())
    assert reasons == {"non-finite embedding or logits (NaN/inf)"}


# ---------------------------------------------------------------- resume
@pytest.mark.ray
def test_deleted_shards_are_redone_and_the_result_is_identical(synth_logs: Path, tmp_path: Path,
                                                               ray_local: str) -> None:
    manifest = synth_logs / "manifest.parquet"
    kw = dict(encoder="builtin", out=tmp_path / "out", shard_rows=64, batch_size=32, actors=1, progress=False)
    first = embed_manifest(manifest, **kw)
    before = _read_embeddings(first.embeddings_path)
    assert first.n_shards == 6 and first.shards_written == 6
    for shard in (1, 4):  # a crash after shards 0, 2, 3, 5 were recorded
        (tmp_path / "out" / "embeddings" / f"part-{shard:05d}.parquet").unlink()
    (tmp_path / "out" / "errors.parquet").unlink()
    again = embed_manifest(manifest, **kw)
    assert again.shards_written == 2 and again.n_embedded == 360
    assert _read_embeddings(again.embeddings_path).equals(before)
    noop = embed_manifest(manifest, **kw)
    assert noop.shards_written == 0 and _read_embeddings(noop.embeddings_path).equals(before)


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_run_resumes_and_matches_an_uninterrupted_one(synth_logs: Path, tmp_path: Path,
                                                               ray_local: str) -> None:
    class Slow(torch.nn.Module):
        """~60 ms a batch on CPU, so the run is still going when it is killed."""

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = x.flatten(1)[:, :256]
            acc = h
            for _ in range(150):
                acc = torch.tanh(acc @ torch.ones(256, 256) / 256.0 + h)
            return acc[:, :8], acc[:, 8:11]

    model = tmp_path / "slow.pt"
    torch.jit.save(torch.jit.script(Slow()), str(model), _extra_files={"edgemine.json": json.dumps({"input_size": 64})})
    manifest = synth_logs / "manifest.parquet"
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "edgemine", "embed", "--frames", str(manifest), "--encoder", f"torchscript:{model}",
            "--out", str(out), "--shard-rows", "20", "--batch-size", "10", "--actors", "1", "--no-progress"]
    # The job's driver joins the test's Ray runtime, as a job submitted to a cluster would; killing it
    # (SIGKILL, no cleanup) leaves the cluster up.
    env = {**os.environ, "RAY_ADDRESS": ray_local}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    shards = out / "embeddings"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(shards.glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = len(list(shards.glob("part-*.parquet")))
    assert 3 <= done < 18, f"the run was not interrupted mid-way ({done} of 18 shards)"
    assert not (out / "errors.parquet").exists()

    resumed = embed_manifest(manifest, encoder=f"torchscript:{model}", out=out, shard_rows=20, batch_size=10,
                             actors=1, progress=False)
    assert resumed.shards_written == 18 - done and resumed.n_embedded == 360
    clean = embed_manifest(manifest, encoder=f"torchscript:{model}", out=tmp_path / "clean", shard_rows=20,
                           batch_size=10, actors=1, progress=False)
    a, b = _read_embeddings(resumed.embeddings_path), _read_embeddings(clean.embeddings_path)
    assert a.column("frame_id").equals(b.column("frame_id"))
    assert np.allclose(np.asarray(a.column("embedding").to_pylist()), np.asarray(b.column("embedding").to_pylist()),
                       atol=1e-6)
    assert np.allclose(np.asarray(a.column("logits").to_pylist()), np.asarray(b.column("logits").to_pylist()),
                       atol=1e-6)


def test_a_different_encoder_or_config_is_refused(synth_logs: Path, baseline_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    config = {"format_version": 1, "encoder_id": "torchscript:sha256-0000", "dim": 64, "input_size": 64,
              "precision": "fp32", "shard_rows": 100, "manifest_fingerprint": "x", "manifest_rows": 360}
    (out / "_config.json").write_text(json.dumps(config))
    manifest = synth_logs / "manifest.parquet"
    with pytest.raises(IncompatibleArtifactError, match=r"encoder_id='torchscript:sha256-0000' but this run has "
                                                        r"encoder_id='torchscript:sha256-[0-9a-f]{16}'"):
        embed_manifest(manifest, encoder=f"torchscript:{baseline_model}", out=out, shard_rows=100, progress=False)
    from edgemine.embeddings.encoders import load_encoder

    config["encoder_id"] = load_encoder(f"torchscript:{baseline_model}").encoder_id
    (out / "_config.json").write_text(json.dumps(config))
    with pytest.raises(IncompatibleArtifactError, match="manifest_fingerprint='x' but this run has"):
        embed_manifest(manifest, encoder=f"torchscript:{baseline_model}", out=out, shard_rows=100, progress=False)
    with pytest.raises(IncompatibleArtifactError, match="shard_rows=100 but this run has shard_rows=50"):
        embed_manifest(manifest, encoder=f"torchscript:{baseline_model}", out=out, shard_rows=50, progress=False)


def test_shards_without_a_config_are_not_mixed(synth_logs: Path, tmp_path: Path) -> None:
    (tmp_path / "out" / "embeddings").mkdir(parents=True)
    (tmp_path / "out" / "embeddings" / "part-00000.parquet").write_bytes(b"x")
    with pytest.raises(IncompatibleArtifactError, match="no _config.json"):
        embed_manifest(synth_logs / "manifest.parquet", encoder="builtin", out=tmp_path / "out", progress=False)


def test_bad_options_name_the_value(synth_logs: Path, tmp_path: Path) -> None:
    m = synth_logs / "manifest.parquet"
    with pytest.raises(ConfigError, match="batch_size=0"):
        embed_manifest(m, encoder="builtin", out=tmp_path, batch_size=0)
    with pytest.raises(ConfigError, match=r"decode='gpu' is not one of \['actor', 'tasks'\]"):
        embed_manifest(m, encoder="builtin", out=tmp_path, decode="gpu")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="device='cuda' but no GPU"):
        embed_manifest(m, encoder="builtin", out=tmp_path / "o", device="cuda", progress=False)
    assert not (tmp_path / "o" / "_config.json").exists()


# ---------------------------------------------------------------- bring your own embeddings
def test_manifest_embeddings_are_written_without_inference(synth_logs: Path, tmp_path: Path) -> None:
    man = read_manifest(synth_logs / "manifest.parquet").slice(0, 30)
    rng = np.random.default_rng(0)
    vectors: list[list[float] | None] = [list(rng.random(8).astype(np.float32)) for _ in range(30)]
    vectors[3] = None
    vectors[7] = [1.0, 2.0]
    vectors[9] = [float("nan")] * 8
    table = man.append_column("embedding", pa.array(vectors, pa.list_(pa.float32())))
    pq.write_table(table, tmp_path / "m.parquet", row_group_size=7)
    res = embed_manifest(tmp_path / "m.parquet", encoder="builtin", out=tmp_path / "out", shard_rows=10,
                         progress=False)
    assert res.encoder_id == "manifest" and res.dim == 8 and (res.n_embedded, res.n_errors) == (27, 3)
    got = _read_embeddings(res.embeddings_path)
    assert got.schema.equals(embeddings_schema(8))
    keep = [i for i in range(30) if i not in (3, 7, 9)]
    assert got.column("frame_id").to_pylist() == [man.column("frame_id")[i].as_py() for i in keep]
    assert np.allclose(np.asarray(got.column("embedding").to_pylist()), np.asarray([vectors[i] for i in keep]))
    reasons = dict(zip(*[pq.read_table(res.errors_path).column(c).to_pylist() for c in ("frame_id", "reason")],
                       strict=True))
    fids = man.column("frame_id").to_pylist()
    assert reasons == {fids[3]: "embedding is null", fids[7]: "embedding has 2 values, expected 8",
                       fids[9]: "embedding has non-finite values (NaN/inf)"}


def test_check_vectors_handles_fixed_size_and_sliced_columns() -> None:
    from edgemine.embeddings.manifest import check_vectors

    vals = np.arange(20, dtype=np.float32).reshape(5, 4)
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(vals.ravel()), 4, mask=pa.array([False, True, False, False,
                                                                                        False]))
    emb, ok, errors = check_vectors(fixed.slice(1), dim=4)  # a slice: offsets do not start at 0
    assert ok.tolist() == [1, 2, 3] and np.array_equal(emb, vals[2:]) and errors == {0: ("validate",
                                                                                          "embedding is null")}
    ragged = pa.chunked_array([pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float64())), pa.array([[None, 1.0]])])
    emb, ok, errors = check_vectors(ragged, dim=2)
    assert ok.tolist() == [0] and emb.dtype == np.float32 and emb.tolist() == [[1.0, 2.0]]
    assert errors == {1: ("validate", "embedding has 1 values, expected 2"),
                      2: ("validate", "embedding has non-finite values (NaN/inf)")}


def test_check_vectors_refuses_rows_too_large_for_float32_distances() -> None:
    from edgemine.embeddings.manifest import check_vectors

    rows = pa.array([[1.0, 2.0], [1e38, 0.0], [3e19, 0.0], [1e300, 0.0]], pa.list_(pa.float64()))
    emb, ok, errors = check_vectors(rows, dim=2)
    assert ok.tolist() == [0] and emb.tolist() == [[1.0, 2.0]]
    assert errors[1][1].startswith("embedding is too large") and errors[2][1].startswith("embedding is too large")
    assert errors[3] == ("validate", "embedding has non-finite values (NaN/inf)")  # 1e300 is inf in float32


def test_progress_tells_a_caller_rows_done_of_total() -> None:
    from edgemine.embeddings.progress import Progress

    seen: list[tuple[int, int]] = []
    bar = Progress(10, enabled=False, on_update=lambda d, t: seen.append((d, t)))
    bar.update(4)
    bar.update(6, errors=1)
    assert seen == [(4, 10), (10, 10)] and bar.errors == 1
