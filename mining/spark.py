"""The Spark session factory: `local[*]` by default, any master (spark://, k8s://) from the job spec.

Starting a local session takes seconds, so callers share one: `get_spark` returns the active session when
its master matches instead of starting another. The JVM logs errors only (log4j2.properties), to its stderr;
inside `edgemine.runtime.engine_log` (as `edgemine mine` runs) that is the run's engine.log, with the JVM's
own launcher warnings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    # Small local inputs: a handful of partitions beats the default 200 shuffle partitions.
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.adaptive.enabled": "true",
    "spark.driver.memory": "2g",
}
LOG4J2 = Path(__file__).with_name("log4j2.properties")  # errors only (see the file)


def get_spark(master: str = "local[*]", *, app_name: str = "edgemine-mine", conf: Mapping[str, Any] | None = None):  # noqa: ANN201
    """A SparkSession on `master` (reused when one is already active on the same master)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # The driver JVM's options must be given at launch: spark.driver.extraJavaOptions set on the builder comes
    # too late for the gateway pyspark starts, which then prints log4j's default-profile banner.
    os.environ.setdefault("PYSPARK_SUBMIT_ARGS",
                          f'--driver-java-options "-Dlog4j2.configurationFile=file:{LOG4J2}" pyspark-shell')
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None and active.sparkContext.master == master:
        for k, v in (conf or {}).items():
            if not k.startswith("spark.driver.") and not k.startswith("spark.executor."):
                active.conf.set(k, str(v))
        return active
    builder = SparkSession.builder.master(master).appName(app_name)
    quiet = {"spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{LOG4J2}"}
    for k, v in {**DEFAULT_CONF, **quiet, **{k: str(v) for k, v in (conf or {}).items()}}.items():
        builder = builder.config(k, v)
    import signal
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main_thread else None
    spark = builder.getOrCreate()
    if main_thread and handler is not None:  # pyspark installs its own SIGINT handler; the caller's stays
        signal.signal(signal.SIGINT, handler)
    spark.sparkContext.setLogLevel("ERROR")
    proc = getattr(getattr(type(spark.sparkContext), "_gateway", None), "proc", None)
    if proc is not None and proc not in _GATEWAY_PROCESSES:
        _GATEWAY_PROCESSES.append(proc)
    return spark


# The gateway JVMs this process launched (pyspark forgets its handle when a session stops, while the JVM
# lives on until its stdin closes): `edgemine` ends them before it exits (jobs/cli.py stop_engines).
_GATEWAY_PROCESSES: list[Any] = []


def gateway_processes() -> list[Any]:
    """subprocess.Popen handles of the Spark gateway JVMs started by get_spark in this process."""
    return list(_GATEWAY_PROCESSES)
