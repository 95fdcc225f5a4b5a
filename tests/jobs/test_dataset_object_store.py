"""A training set on an object store: published with its frames to s3:// on a local S3 server (moto), then read
back - rows, classes and images - by the CLI and EdgeCaseDataset, with deltalake's storage options."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgemine.errors import ConfigError, IncompatibleArtifactError
from edgemine.jobs.dataset_frames import filesystem, read_frame, s3_arguments
from edgemine.jobs.datasets import EdgeCaseDataset, dataset_show, read_dataset
from edgemine.jobs.publish import SplitPolicy, publish, training_rows
from tests.support.datasets import CATS, confirmed, write_frames

ALL_TRAIN = SplitPolicy(ratios={"train": 1.0})


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A moto S3 server on a free local port with a bucket `bkt`; yields the storage options that reach it.

    In its own process: in-process (ThreadedMotoServer) it needs the GIL to answer, and deltalake's filesystem
    handler holds the GIL while it waits for the answer (its reads then time out after 180 s).
    """
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        options = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true",
                   "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}
        boto3.client("s3", endpoint_url=options["AWS_ENDPOINT_URL"], aws_access_key_id="test",
                     aws_secret_access_key="test", region_name="us-east-1").create_bucket(Bucket="bkt")
        yield options
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.integration
def test_a_dataset_published_with_its_frames_to_s3_reads_back_pinned_with_its_images(
        s3: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from edgemine.jobs.cli import main

    colours = write_frames(tmp_path / "mining", list(range(6)))
    ds = "s3://bkt/edge_cases"
    r0 = publish(training_rows(confirmed([0, 1, 2], uri_dir=tmp_path / "mining"), policy=ALL_TRAIN), ds,
                 lineage={}, frames="copy", storage_options=s3, taxonomy=list(CATS))
    r1 = publish(training_rows(confirmed([2, 3, 4, 5], uri_dir=tmp_path / "mining"), policy=ALL_TRAIN), ds,
                 lineage={}, frames="copy", storage_options=s3)
    assert (r0.version, r0.frames, r1.version, r1.added) == (0, {"mode": "copy", "placed": 3, "kept": 0}, 1, 3)
    stored = read_dataset(f"{ds}@v1", resolve_uris=False, storage_options=s3)
    assert stored.column("uri").to_pylist() == [f"frames/d{i // 5}/f{i:04d}.png" for i in range(6)]
    fs, path = filesystem(f"{ds}/frames/d0/f0000.png", s3)
    assert fs.get_file_info(path).size > 0  # the frame is an object in the bucket, next to the table

    data = EdgeCaseDataset(f"{ds}@v0", split="train", size=8, storage_options=s3)
    assert data.uris == [f"{ds}/frames/d0/f000{i}.png" for i in range(3)] and data.classes == list(CATS)
    got = {f: float(data[i][0][0].mean()) for i, f in enumerate(data.table.column("frame_id").to_pylist())}
    assert got == pytest.approx({f"f000{i}": colours[i][0] / 255 for i in range(3)}, abs=0.01)  # red channel
    assert [data[i][1] for i in range(3)] == [0, 1, 2]
    import pickle  # a DataLoader worker gets a copy, and makes its own filesystem

    assert float(pickle.loads(pickle.dumps(data))[1][0][0].mean()) == pytest.approx(got["f0001"])
    assert len(EdgeCaseDataset(f"{ds}@v1", split="train", size=8, storage_options=s3)) == 6

    flags = [a for k, v in s3.items() for a in ("--storage-option", f"{k}={v}")]
    assert main(["datasets", "show", f"{ds}@v1", "--json", *flags]) == 0
    assert '"rows": 6' in capsys.readouterr().out
    for k, v in s3.items():  # no options at all: deltalake and the frame reads take them from the environment
        monkeypatch.setenv(k, v)
    assert dataset_show(f"{ds}@v0")["rows"] == 3
    plain = EdgeCaseDataset(f"{ds}@v0", split="train", size=8)
    assert float(plain[2][0][0].mean()) == pytest.approx(colours[2][0] / 255, abs=0.01)


@pytest.mark.integration
def test_an_object_store_frame_is_never_overwritten(s3: dict[str, str], tmp_path: Path) -> None:
    """A different object already where a frame goes (a stray, or another publisher's image under the same
    frame id) is refused and left as it was; an identical one is kept; link needs a local root."""
    write_frames(tmp_path / "a", [7])
    stray = b"not this frame"
    fs, path = filesystem("s3://bkt/clash/frames/d1/f0007.png", s3)
    with fs.open_output_stream(path) as f:
        f.write(stray)
    rows = training_rows(confirmed([7], uri_dir=tmp_path / "a"), policy=ALL_TRAIN)
    with pytest.raises(IncompatibleArtifactError, match="already holds a different file"):
        publish(rows, "s3://bkt/clash", lineage={}, frames="copy", storage_options=s3)
    assert read_frame("s3://bkt/clash/frames/d1/f0007.png", s3) == stray
    with fs.open_output_stream(path) as f:
        f.write((tmp_path / "a" / "7.png").read_bytes())
    r = publish(rows, "s3://bkt/clash", lineage={}, frames="copy", storage_options=s3)
    assert r.frames == {"mode": "copy", "placed": 0, "kept": 1}
    with pytest.raises(ConfigError, match="--frames link hard-links frames under the dataset root"):
        publish(rows, "s3://bkt/linked", lineage={}, frames="link", storage_options=s3)


def test_deltalakes_aws_options_map_to_s3filesystem_arguments() -> None:
    opts: dict[str, Any] = {"AWS_ACCESS_KEY_ID": "k", "aws_secret_access_key": "s", "AWS_REGION": "eu-west-1",
                            "AWS_SESSION_TOKEN": "t", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000/",
                            "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true", "timeout": "30s"}
    assert s3_arguments(opts) == {"access_key": "k", "secret_key": "s", "region": "eu-west-1",
                                  "session_token": "t", "endpoint_override": "127.0.0.1:9000", "scheme": "http"}
    assert s3_arguments({"AWS_ENDPOINT_URL": "minio.local:9000"}) == {"endpoint_override": "minio.local:9000",
                                                                     "scheme": "https"}
    assert s3_arguments(None) == s3_arguments({"timeout": "30s"}) == {}
    with pytest.raises(ConfigError, match=r"AWS_ENDPOINT_URL='http://h:1' is plain http; set AWS_ALLOW_HTTP=true"):
        s3_arguments({"AWS_ENDPOINT_URL": "http://h:1"})


def test_a_file_uri_frame_reads_through_the_local_path_and_pyarrow_fs_alike(tmp_path: Path) -> None:
    import pyarrow.fs as pafs

    write_frames(tmp_path / "f", [3])
    frame = tmp_path / "f" / "3.png"
    assert read_frame(frame.as_uri()) == read_frame(str(frame)) == frame.read_bytes()
    fs, path = filesystem(frame.as_uri())
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(frame)
