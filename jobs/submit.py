"""Submit edgemine jobs to a Ray cluster through the Ray Jobs API, and manage them.

A submitted job runs `python -m edgemine <command…>` on the cluster's head node (the mining job itself then
fans out over the cluster's Ray workers). The runtime environment carries the project: the `edgemine`
package goes up as one of `py_modules`, laid out as a wheel installs it (`package_tree`: the core with
`mining/`, `embeddings/`, `review_api/` and `jobs/` beneath it, whether this process runs from a checkout
or an installed wheel), and a small staging folder holding the job's files (e.g. the YAML spec) is the job's
`working_dir`. Data paths inside a spec must be reachable from the cluster (shared storage,
s3://, gs://).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemine.errors import ConfigError, InputNotFoundError, MissingDependencyError, NotFoundError

SUBPACKAGES = ("mining", "embeddings", "review_api", "jobs")
ADDRESS_ENV = ("EDGEMINE_RAY_ADDRESS", "RAY_JOB_ADDRESS")
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - we are running from it
        raise MissingDependencyError(f"package {name!r} is not importable")
    return Path(next(iter(spec.submodule_search_locations)))


def package_tree(dest: Path) -> Path:
    """Copy the importable `edgemine` package into dest/edgemine, laid out as the wheel installs it.

    From a checkout (editable install) the subpackages live in the top-level folders the package-dir
    mapping points at; from a wheel they already sit inside edgemine/. Returns dest/edgemine.
    """
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    root = dest / "edgemine"
    shutil.copytree(_package_dir("edgemine"), root, ignore=skip)
    for sub in SUBPACKAGES:
        if not (root / sub / "__init__.py").is_file():
            shutil.copytree(_package_dir(f"edgemine.{sub}"), root / sub, ignore=skip)
    return root


def resolve_address(address: str | None) -> str:
    addr = address or next((os.environ[e] for e in ADDRESS_ENV if os.environ.get(e)), None)
    if not addr:
        raise ConfigError(f"no Ray cluster address: pass --address http://HOST:8265 or set {ADDRESS_ENV[0]}")
    if not addr.startswith(("http://", "https://")):
        raise ConfigError(f"address {addr!r} must be the Ray dashboard URL, e.g. http://127.0.0.1:8265")
    return addr.rstrip("/")


def _client(address: str | None):  # noqa: ANN202 - ray.job_submission.JobSubmissionClient
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:  # pragma: no cover - ray[default] is a dependency
        raise MissingDependencyError("job submission needs ray[default]: pip install 'ray[default]'") from exc
    addr = resolve_address(address)
    try:
        return JobSubmissionClient(addr)
    except (ConnectionError, RuntimeError) as exc:
        raise ConfigError(f"cannot reach a Ray cluster at {addr}: {exc}") from exc


def runtime_env(staging: Path, package: Path, *, pip: Sequence[str] = (),
                env_vars: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The runtime environment that carries the project (`package`, see package_tree) to the cluster."""
    env: dict[str, Any] = {
        "working_dir": str(staging),
        "py_modules": [str(package)],
        "env_vars": {"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"), **(env_vars or {})},
    }
    if pip:
        env["pip"] = list(pip)
    return env


@dataclass(frozen=True)
class Submitted:
    job_id: str
    address: str
    entrypoint: str


def submit_command(
    args: Sequence[str],
    *,
    address: str | None = None,
    files: Mapping[str, str | os.PathLike[str]] | None = None,
    pip: Sequence[str] = (),
    env_vars: Mapping[str, str] | None = None,
    job_id: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Submitted:
    """Submit `edgemine ARGS…` as a Ray job. `files` (name -> local path) go into the job's working dir."""
    import shlex

    client = _client(address)
    tmp = Path(tempfile.mkdtemp(prefix="edgemine-job-"))
    staging = tmp / "workdir"
    staging.mkdir()
    try:
        package = package_tree(tmp / "package")
        for name, src in (files or {}).items():
            if not Path(src).is_file():
                raise InputNotFoundError(f"job file {str(src)!r} does not exist")
            shutil.copy(src, staging / name)
        entrypoint = "python -m edgemine " + " ".join(shlex.quote(a) for a in args)
        sid = client.submit_job(entrypoint=entrypoint, submission_id=job_id,
                                runtime_env=runtime_env(staging, package, pip=pip, env_vars=env_vars),
                                metadata={"edgemine": "1", **(metadata or {})})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the runtime env was uploaded by submit_job
    return Submitted(sid, resolve_address(address), entrypoint)


def submit_mining_job(spec: str | os.PathLike[str], *, address: str | None = None, pip: Sequence[str] = (),
                      job_id: str | None = None) -> Submitted:
    """Submit `edgemine mine JOB.yaml` with the spec shipped alongside."""
    path = Path(spec)
    if not path.is_file():
        raise InputNotFoundError(f"job spec {str(path)!r} does not exist")
    return submit_command(["mine", "job.yaml"], address=address, files={"job.yaml": path}, pip=pip,
                          job_id=job_id, metadata={"spec": path.name})


def _status_name(status: Any) -> str:
    return str(getattr(status, "value", status))


def list_jobs(*, address: str | None = None) -> list[dict[str, Any]]:
    out = []
    for j in _client(address).list_jobs():
        out.append({"job_id": j.submission_id, "status": _status_name(j.status), "entrypoint": j.entrypoint,
                    "start_time": j.start_time, "end_time": j.end_time, "message": j.message})
    return sorted(out, key=lambda j: j["start_time"] or 0)


def job_status(job_id: str, *, address: str | None = None) -> dict[str, Any]:
    client = _client(address)
    try:
        info = client.get_job_info(job_id)
    except RuntimeError as exc:
        raise NotFoundError(f"no job {job_id!r} on {resolve_address(address)}") from exc
    return {"job_id": job_id, "status": _status_name(info.status), "entrypoint": info.entrypoint,
            "message": info.message, "start_time": info.start_time, "end_time": info.end_time}


def job_logs(job_id: str, *, address: str | None = None) -> str:
    client = _client(address)
    try:
        return str(client.get_job_logs(job_id))
    except RuntimeError as exc:
        raise NotFoundError(f"no job {job_id!r} on {resolve_address(address)}") from exc


def stop_job(job_id: str, *, address: str | None = None) -> bool:
    client = _client(address)
    try:
        return bool(client.stop_job(job_id))
    except RuntimeError as exc:
        raise NotFoundError(f"no job {job_id!r} on {resolve_address(address)}") from exc


def wait_for(job_id: str, *, address: str | None = None, timeout: float = 600.0, poll: float = 1.0) -> str:
    """Block until the job reaches a terminal state; return it."""
    deadline = time.monotonic() + timeout
    while True:
        status = job_status(job_id, address=address)["status"]
        if status in TERMINAL:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {status} after {timeout:.0f}s")
        time.sleep(poll)
