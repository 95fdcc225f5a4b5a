"""Start and stop a real single-node Ray cluster (head + dashboard/Jobs API) on 127.0.0.1 for tests.

Every port is chosen free so the cluster never collides with another Ray on the machine, and the cluster
is stopped by PID (the processes holding its own temp dir), never with `ray stop`, which would kill every
Ray on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RayHead:
    address: str  # dashboard / Jobs API URL
    gcs: str  # 127.0.0.1:PORT for ray.init(address=...)
    temp_dir: str
    pid: int


def _pids_using(marker: str) -> list[int]:
    import psutil

    pids = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in part for part in (p.info["cmdline"] or [])):
                pids.append(p.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


@contextmanager
def ray_head(num_cpus: int = 1, timeout: float = 90.0) -> Iterator[RayHead]:
    ray_bin = str(Path(sys.executable).with_name("ray"))
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's unix sockets live under it
    port, dash = free_port(), free_port()
    args = [
        ray_bin, "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address=127.0.0.1", f"--port={port}", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}", "--include-dashboard=true", f"--num-cpus={num_cpus}",
        f"--temp-dir={temp_dir}", f"--ray-client-server-port={free_port()}",
        f"--object-manager-port={free_port()}", f"--node-manager-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
    ]
    # Job entrypoints run `python` from PATH, as on a real cluster image: make it this environment's.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    log = open(Path(temp_dir) / "head.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ray start exited {proc.returncode}: {Path(temp_dir, 'head.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/api/version", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray head did not come up in {timeout}s: {Path(temp_dir, 'head.log').read_text()}")
            time.sleep(0.5)
        yield RayHead(url, f"127.0.0.1:{port}", temp_dir, proc.pid)
    finally:
        stop_by_pid(proc, temp_dir)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def stop_by_pid(proc: subprocess.Popen, temp_dir: str) -> None:
    """SIGTERM the `ray start --block` process (it tears its children down), then kill any straggler."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    for pid in _pids_using(temp_dir):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
