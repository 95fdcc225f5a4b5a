"""A real Spark standalone master + worker on 127.0.0.1 for tests, started and stopped by PID.

pip's pyspark has no sbin/start-*.sh; `bin/spark-class org.apache.spark.deploy.master.Master` and
`...worker.Worker` are what those scripts run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.support.ray_cluster import free_port


@dataclass(frozen=True)
class SparkStandalone:
    master_url: str
    pids: tuple[int, ...]


def _spark_class() -> str:
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / "spark-class")


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"spark process exited {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"spark did not listen on {port} in {timeout}s: {log.read_text()[-2000:]}")


def _wait_worker(web_port: int, timeout: float) -> None:
    """Until the master's status page lists one ALIVE worker."""
    import json
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/json/", timeout=2) as r:
                if json.load(r).get("aliveworkers", 0) >= 1:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no Spark worker registered with the master in {timeout}s")


@contextmanager
def spark_standalone(cores: int = 1, memory: str = "1g", timeout: float = 90.0) -> Iterator[SparkStandalone]:
    work = Path(tempfile.mkdtemp(prefix="spark-standalone-"))
    port, web, wport, wweb = free_port(), free_port(), free_port(), free_port()
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_MASTER_HOST": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable, "SPARK_WORKER_DIR": str(work / "worker"),
           "SPARK_LOG_DIR": str(work)}
    cls = _spark_class()
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        mlog = work / "master.log"
        logs.append(open(mlog, "w"))  # noqa: SIM115 - closed in finally
        procs.append(subprocess.Popen(
            [cls, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(web)], stdout=logs[-1], stderr=subprocess.STDOUT, env=env, start_new_session=True))
        _wait_port(port, procs[-1], mlog, timeout)
        url = f"spark://127.0.0.1:{port}"
        wlog = work / "worker.log"
        logs.append(open(wlog, "w"))  # noqa: SIM115 - closed in finally
        procs.append(subprocess.Popen(
            [cls, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--port", str(wport),
             "--webui-port", str(wweb), "--cores", str(cores), "--memory", memory, "--work-dir", str(work / "w"),
             url], stdout=logs[-1], stderr=subprocess.STDOUT, env=env, start_new_session=True))
        _wait_worker(web, timeout)
        yield SparkStandalone(url, tuple(p.pid for p in procs))
    finally:
        for p in reversed(procs):  # stop by PID: worker first, then master
            if p.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    with suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=10)
        for f in logs:
            f.close()
