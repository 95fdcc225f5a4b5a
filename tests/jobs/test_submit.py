from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from edgemine.errors import ConfigError, InputNotFoundError, NotFoundError
from edgemine.jobs.submit import job_logs, job_status, list_jobs, resolve_address, stop_job, submit_command, wait_for
from tests.support.ray_cluster import RayHead, _pids_using, ray_head

pytestmark = [pytest.mark.ray, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def head() -> Iterator[RayHead]:
    with ray_head(num_cpus=2) as h:
        yield h
    assert _pids_using(h.temp_dir) == []  # stopped by PID, nothing left behind


def test_a_job_runs_on_the_cluster_with_the_project_shipped(head: RayHead, tmp_path: Path) -> None:
    out = tmp_path / "logs"
    s = submit_command(["synth", "--drives", "2", "--frames-per-drive", "20", "--size", "32", "--rare-rate", "0.25",
                        "--out", str(out)], address=head.address)
    assert wait_for(s.job_id, address=head.address, timeout=240) == "SUCCEEDED", job_logs(s.job_id,
                                                                                         address=head.address)
    assert "wrote 40 frames in 2 drives" in job_logs(s.job_id, address=head.address)
    assert pq.read_table(out / "manifest.parquet").num_rows == 40
    assert any(j["job_id"] == s.job_id and j["status"] == "SUCCEEDED" for j in list_jobs(address=head.address))


def test_a_mining_job_runs_on_the_cluster(head: RayHead, synth_logs: Path, reference_logs: Path,
                                          tmp_path: Path) -> None:
    import yaml

    from edgemine.jobs.submit import submit_mining_job
    from tests.support.frames import with_embeddings

    frames = with_embeddings(synth_logs, tmp_path / "frames.parquet")
    ref = with_embeddings(reference_logs, tmp_path / "reference.parquet")
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"frames": str(frames), "reference": str(ref), "out": str(tmp_path / "run"),
                                    "budget": 10, "spark": {"master": "local[1]"}}))
    s = submit_mining_job(spec, address=head.address)
    assert s.entrypoint == "python -m edgemine mine job.yaml"
    status = wait_for(s.job_id, address=head.address, timeout=400)
    assert status == "SUCCEEDED", job_logs(s.job_id, address=head.address)[-3000:]
    cands = pq.read_table(tmp_path / "run" / "candidates.parquet")
    assert 0 < cands.num_rows <= 10 and (tmp_path / "run" / "report.html").exists()


def test_a_failing_job_reports_failure_and_its_one_line_error(head: RayHead, tmp_path: Path) -> None:
    s = submit_command(["validate", str(tmp_path / "missing.parquet")], address=head.address)
    assert wait_for(s.job_id, address=head.address, timeout=240) == "FAILED"
    assert "does not exist" in job_logs(s.job_id, address=head.address)


def test_stop_a_running_job(head: RayHead, tmp_path: Path) -> None:
    s = submit_command(["synth", "--drives", "40", "--frames-per-drive", "400", "--out", str(tmp_path / "big")],
                       address=head.address)
    stop_job(s.job_id, address=head.address)
    assert wait_for(s.job_id, address=head.address, timeout=120) == "STOPPED"


def test_cli_submit_and_jobs_commands(head: RayHead, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "edgemine"]
    listed = subprocess.run([*cli, "jobs", "list", "--address", head.address], capture_output=True, text=True,
                            check=True)
    assert "SUCCEEDED" in listed.stdout
    missing = subprocess.run([*cli, "jobs", "status", "no-such-job", "--address", head.address],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "no job 'no-such-job'" in missing.stderr


def test_addresses_and_files_are_checked_before_anything_is_sent(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEMINE_RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match="no Ray cluster address"):
        resolve_address(None)
    with pytest.raises(ConfigError, match="'127.0.0.1:6379' must be the Ray dashboard URL"):
        resolve_address("127.0.0.1:6379")


def test_unknown_jobs_and_missing_files_name_the_value(head: RayHead, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no job 'nope'"):
        job_status("nope", address=head.address)
    with pytest.raises(InputNotFoundError, match="missing.yaml"):
        submit_command(["mine", "job.yaml"], address=head.address, files={"job.yaml": tmp_path / "missing.yaml"})
